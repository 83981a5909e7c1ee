"""The HTML report is one standalone file: inline CSS, images as data URIs, tables from Markdown."""

from __future__ import annotations

import base64
from html.parser import HTMLParser
from pathlib import Path

import pytest

from atcon import report
from atcon.evaluate import LocalizationProtocol


class Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_report_is_standalone_with_embedded_images(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    gif = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
    (tmp_path / "metrics.csv").write_text(
        "epoch,step,train_loss,lr,val_map,selection,best\n0,2,0.7,0.001,0.2,0.2,True\n1,4,0.6,0.001,,0.25,True\n"
    )
    table = "| method | F1 (%) |\n|---|---:|\n| base <b> | 50.0 [40.0-60.0] |\n| new | 61.0 [50.0-70.0]* |"
    path = report.write_report(
        tmp_path / "out" / "report.html",
        "Title & more",
        [
            report.text("First `code` paragraph.\n\nSecond **bold** one."),
            report.table(table, "Results", caption="* p < 0.05"),
            report.table((["a", "b"], [[1, 0.123456], ["x", float("nan")]]), "Rows"),
            report.protocol(LocalizationProtocol()),
            report.figure(fig, "Figure", caption="a line"),
            report.figure(gif, "Animation", mime="image/gif"),
            report.training_curves(tmp_path),
        ],
        subtitle="run by a test",
    )
    html = path.read_text()
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    p = Collect()
    p.feed(html)
    tags = [t for t, _ in p.tags]
    imgs = [a for t, a in p.tags if t == "img"]
    assert len(imgs) == 3
    assert all(
        (a["src"] or "").startswith(("data:image/png;base64,", "data:image/gif;base64,")) for a in imgs
    )
    # Nothing is loaded from elsewhere: no stylesheet link, script or external src/href.
    assert "link" not in tags and "script" not in tags
    assert not any(
        k in ("src", "href") and not (v or "").startswith("data:") for _, a in p.tags for k, v in a.items()
    )
    assert "<style>" in html and "Title &amp; more" in html
    assert "base &lt;b&gt;" in html and "<code>code</code>" in html and "<strong>bold</strong>" in html
    assert tags.count("tr") == 3 + 3 and "class=num" in html
    assert "pointing game with a 15 px tolerance" in html and "n/a" in html


def test_markdown_table_needs_an_alignment_row() -> None:
    with pytest.raises(ValueError, match="alignment row"):
        report.markdown_table_html("| a | b |\n| 1 | 2 |")


def test_figure_from_file(tmp_path: Path) -> None:
    png = tmp_path / "x.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n")
    s = report.figure(png, "x")
    assert 'src="data:image/png;base64,iVBORw0KGgo' in s.to_html()
