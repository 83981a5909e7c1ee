"""The one place that imports ``matplotlib.pyplot``: with the Agg backend, so nothing needs a display."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure


def pyplot() -> Any:
    """``matplotlib.pyplot``, imported on first use with the non-interactive Agg backend.

    Figures are written to files (and embedded in reports); selecting Agg before pyplot is
    imported keeps servers, CI and ``torchrun`` workers from looking for a display.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write a figure (PNG/PDF/SVG by suffix, parent folders created) and close it.

    Returns:
        The path written.
    """
    from atcon.results_io import write_figure

    path = write_figure(path, fig, dpi=dpi)
    pyplot().close(fig)
    return path
