"""Results files, written atomically: JSON, Markdown, CSV, HTML, figures and raw bytes.

Every writer here goes through :func:`atomic_open`: the content goes to a temporary sibling
(same folder, so the rename never crosses file systems), is fsynced, and is renamed over the
target with ``os.replace`` (atomic on POSIX and Windows). A crash or an exception while writing
leaves the previous file, or none, never a truncated file that looks valid -- and no temporary.

Text is UTF-8. JSON goes through :func:`atcon._json.to_json` (strict JSON, NaN as ``null``).
``atcon evaluate``, ``atcon sanity``, the demo, the ablation and the experiments write their
results through these functions; training checkpoints use :func:`atomic_open` as well.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from atcon._json import to_json

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = [
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_text",
    "write_csv",
    "write_figure",
    "write_html",
    "write_json",
    "write_markdown",
]


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike[str], mode: str = "w", *, encoding: str | None = None
) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on success fsync it and rename it over ``path``.

    Args:
        path: the target; its parent folders are created.
        mode: ``"w"`` (text) or ``"wb"`` (binary).
        encoding: of text mode (default UTF-8, whatever the locale).

    On an exception inside the block the temporary is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results should be as readable as open()'s
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_open(path, "w") as f:
        f.write(text)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_json(
    path: str | os.PathLike[str],
    obj: Any,
    *,
    indent: int | None = 1,
    default: Callable[[Any], Any] | None = None,
    newline: bool = False,
) -> Path:
    """Write ``obj`` as strict JSON (see :func:`atcon._json.to_json`) atomically.

    Args:
        path: the ``.json`` file.
        obj: dicts, lists, strings, numbers, booleans and None.
        indent: as for :func:`json.dumps`.
        default: called for objects JSON has no type for (e.g. ``str``).
        newline: end the file with a newline.

    Raises:
        TypeError, ValueError: ``obj`` is not JSON-serialisable; nothing is written then.
    """
    # Serialised before the file is opened: a value JSON cannot hold never touches the disk.
    return atomic_write_text(path, to_json(obj, indent=indent, default=default) + ("\n" if newline else ""))


def write_markdown(path: str | os.PathLike[str], text: str) -> Path:
    """Write Markdown text atomically (as given: add the final newline to ``text``)."""
    return atomic_write_text(path, text)


def write_html(path: str | os.PathLike[str], text: str) -> Path:
    """Write an HTML document atomically (see :func:`atcon.report.write_report` to build one)."""
    return atomic_write_text(path, text)


def write_csv(
    path: str | os.PathLike[str],
    rows: str | Iterable[Mapping[str, Any]],
    fieldnames: Sequence[str] | None = None,
) -> Path:
    """Write a CSV file atomically.

    Args:
        path: the ``.csv`` file.
        rows: the CSV text as is, or records written with :class:`csv.DictWriter` (header first;
            ``\\r\\n`` line ends, as the csv module's dialect says).
        fieldnames: the columns, in order (default: the first record's keys). With no records
            and no field names the file is empty.
    """
    if isinstance(rows, str):
        return atomic_write_text(path, rows)
    records = list(rows)
    buf = io.StringIO()
    names = list(fieldnames) if fieldnames is not None else (list(records[0]) if records else [])
    if names:
        w = csv.DictWriter(buf, fieldnames=names)
        w.writeheader()
        w.writerows(records)
    return atomic_write_text(path, buf.getvalue())


def write_figure(path: str | os.PathLike[str], fig: Figure, **savefig: Any) -> Path:
    """Write a matplotlib figure atomically, in the format of the suffix (``.png``, ``.pdf``, ``.svg``).

    ``savefig`` keywords (``dpi``, ``bbox_inches``, ...) go to :meth:`Figure.savefig`. The figure
    is left open.
    """
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format=fmt, **savefig)
    return path
