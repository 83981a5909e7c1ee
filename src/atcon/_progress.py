"""How progress is shown: a live bar on a terminal, plain lines in logs.

A progress bar redraws itself with carriage returns; written to a file (``atcon train ... >
log.txt 2>&1``, a batch job's output) every redraw stays, and a log holds hundreds of partial
lines per stage. Code that shows progress asks :func:`interactive` and, when the answer is no,
prints one line per epoch or stage instead.
"""

from __future__ import annotations

import sys
from typing import TextIO


def interactive(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default: ``sys.stderr``) shows a live progress bar well.

    True for a terminal and inside a Jupyter kernel (whose bars are widgets); False for files,
    pipes and captured output.
    """
    stream = stream if stream is not None else sys.stderr
    if "ipykernel" in sys.modules:
        return True
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # a closed or detached stream
        return False


def line(message: str) -> None:
    """Print one progress line to ``sys.stderr`` (flushed, so logs show it at once)."""
    print(message, file=sys.stderr, flush=True)
