"""Self-contained HTML reports: one file with inline CSS and base64 images, no server needed.

A report is a title and a list of :class:`Section` objects built by the helpers below::

    from atcon import report

    report.write_report(
        "out/report.html",
        "Baseline vs. fine-tuned",
        [
            report.table(results_table(results, reference="baseline"), title="Results"),
            report.protocol(LocalizationProtocol()),
            report.training_curves("runs/baseline/metrics.csv"),
            report.figure(fig, title="Attention maps", caption="..."),
        ],
    )

Nothing in the file refers to another file or to the network: images are ``data:`` URIs, so the
report can be mailed or archived as is. Plots come from :mod:`atcon.viz`, imported only when drawn.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from atcon.evaluate.localization import LocalizationProtocol

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;border-bottom:2px solid #ddd;padding-bottom:.3em}
h2{font-size:1.25em;margin-top:1.8em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.3em .6em}
th{background:#f3f3f3}
td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1em 0}
figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}
code,pre{background:#f6f6f6;font-size:.9em}
pre{padding:.6em;overflow-x:auto}
.meta{color:#666;font-size:.85em}
.note{background:#f8f8f0;border-left:3px solid #cc9;padding:.4em .8em}
"""


@dataclass(frozen=True)
class Section:
    """A block of the report: an optional heading and an HTML body (already escaped)."""

    title: str | None
    body: str

    def to_html(self) -> str:
        head = f"<h2>{html.escape(self.title)}</h2>\n" if self.title else ""
        return f"<section>\n{head}{self.body}\n</section>"


def _inline(text: str) -> str:
    """Escape text, keeping `code` spans and **bold**."""
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def text(body: str, title: str | None = None, *, preformatted: bool = False, note: bool = False) -> Section:
    """Paragraphs of text (blank lines separate them; `code` and **bold** are kept).

    Args:
        body: the text.
        title: section heading.
        preformatted: show the text verbatim in a ``<pre>`` block (logs, commands).
        note: show it as a highlighted note.
    """
    if preformatted:
        return Section(title, f"<pre>{html.escape(body)}</pre>")
    paras = [p.strip() for p in re.split(r"\n\s*\n", body) if p.strip()]
    cls = ' class="note"' if note else ""
    return Section(title, "\n".join(f"<p{cls}>{_inline(p)}</p>" for p in paras))


def _split_row(line: str) -> list[str]:
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|"):
        line = line[:-1]
    return [c.strip() for c in line.split("|")]


def markdown_table_html(markdown: str) -> str:
    """Convert a Markdown pipe table (header, alignment row, rows) to an HTML table."""
    lines = [ln for ln in markdown.strip().splitlines() if ln.strip()]
    if len(lines) < 2 or not re.fullmatch(r"\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?", lines[1].strip()):
        raise ValueError("not a Markdown table: the second line must be the |---|---| alignment row")
    header = _split_row(lines[0])
    right = [c.endswith(":") and not c.startswith(":") for c in _split_row(lines[1])]
    rows = [_split_row(ln) for ln in lines[2:]]
    return rows_table_html(header, rows, right_aligned=right)


def rows_table_html(
    header: Sequence[str], rows: Sequence[Sequence[Any]], right_aligned: Sequence[bool] = ()
) -> str:
    """An HTML table from a header and rows of cells (cells are escaped; floats get 4 digits)."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "n/a" if math.isnan(v) else f"{v:.4g}"
        return _inline(str(v))

    head = "".join(f"<th>{cell(h)}</th>" for h in header)
    body = []
    for row in rows:
        tds = []
        for i, v in enumerate(row):
            num = i < len(right_aligned) and right_aligned[i]
            tds.append(f"<td{' class=num' if num else ''}>{cell(v)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"


def table(
    content: str | tuple[Sequence[str], Sequence[Sequence[Any]]],
    title: str | None = None,
    caption: str | None = None,
) -> Section:
    """A table from Markdown pipe-table text (e.g. :func:`atcon.evaluate.pipeline.results_table`) or ``(header, rows)``.

    Args:
        content: Markdown table text, or a ``(header, rows)`` pair.
        title: section heading.
        caption: a line under the table.
    """
    body = markdown_table_html(content) if isinstance(content, str) else rows_table_html(*content)
    if caption:
        body += f'\n<p class="meta">{_inline(caption)}</p>'
    return Section(title, body)


def image_data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


_MIME = {
    ".png": "image/png",
    ".gif": "image/gif",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".svg": "image/svg+xml",
}


def figure_bytes(fig: Figure, dpi: int = 100) -> bytes:
    """PNG bytes of a matplotlib figure (the figure is closed)."""
    from atcon.viz import pyplot

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    return buf.getvalue()


def figure(
    source: Figure | str | Path | bytes,
    title: str | None = None,
    caption: str | None = None,
    *,
    mime: str = "image/png",
    alt: str = "",
) -> Section:
    """An embedded image: a matplotlib figure, a PNG/GIF/JPEG/SVG file, or raw bytes.

    Args:
        source: the figure (closed after rendering), a file path, or encoded image bytes.
        title: section heading.
        caption: text under the image.
        mime: type of raw bytes (ignored for figures and files).
        alt: alternative text.
    """
    if isinstance(source, bytes):
        data = source
    elif isinstance(source, (str, Path)):
        path = Path(source)
        data, mime = path.read_bytes(), _MIME.get(path.suffix.lower(), "application/octet-stream")
    else:
        data, mime = figure_bytes(source), "image/png"
    cap = f"<figcaption>{_inline(caption)}</figcaption>" if caption else ""
    img = f'<img src="{image_data_uri(data, mime)}" alt="{html.escape(alt or title or "figure")}">'
    return Section(title, f"<figure>{img}{cap}</figure>")


def protocol(p: LocalizationProtocol | str, title: str = "Localization protocol") -> Section:
    """The localization protocol as printed under tables, with its parameters."""
    if isinstance(p, str):
        return text(p, title)
    params = ", ".join(f"`{k}={v}`" for k, v in p.as_dict().items())
    return Section(title, f'<p>{_inline(str(p))}</p>\n<p class="meta">{_inline(params)}</p>')


def training_curves(
    runs: str | Path | Mapping[str, str | Path], title: str = "Training curves", caption: str | None = None
) -> Section:
    """A figure section with the curves of one run (path) or several (label -> path)."""
    mapping = runs if isinstance(runs, Mapping) else {Path(runs).name: runs}
    from atcon.viz import training_curves_figure

    return figure(training_curves_figure(mapping), title, caption)


def render(title: str, sections: Sequence[Section], subtitle: str | None = None) -> str:
    """The whole HTML document as a string."""
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    sub = f'<p class="meta">{_inline(subtitle)}</p>\n' if subtitle else ""
    body = "\n".join(s.to_html() for s in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n{sub}{body}\n"
        f'<p class="meta">Generated by atcon on {stamp}.</p>\n</body>\n</html>\n'
    )


def write_report(
    path: str | Path, title: str, sections: Sequence[Section], subtitle: str | None = None
) -> Path:
    """Write a self-contained HTML report.

    Args:
        path: output file (``.html``); parent folders are created.
        title: page title and heading.
        sections: the blocks, in order (see :func:`text`, :func:`table`, :func:`figure`,
            :func:`protocol`, :func:`training_curves`).
        subtitle: a line under the title (e.g. the command that produced it).

    Returns:
        The path written (atomically: a reader never sees half a report).
    """
    from atcon.results_io import write_html

    return write_html(path, render(title, sections, subtitle))
