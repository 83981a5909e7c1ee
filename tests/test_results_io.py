"""Results files: each format as expected, and a failed write keeps the old file and no temporary."""

from __future__ import annotations

import json
import math
import stat
from pathlib import Path
from typing import Any

import pytest

from atcon import report, results_io
from atcon.results_io import (
    atomic_open,
    atomic_write_bytes,
    atomic_write_text,
    write_csv,
    write_figure,
    write_html,
    write_json,
    write_markdown,
)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_json_is_strict_and_ends_as_asked(tmp_path: Path) -> None:
    write_json(tmp_path / "a.json", {"x": math.nan, "y": [1, 2.5]})
    write_json(tmp_path / "b.json", {"p": Path("q")}, default=str, newline=True, indent=None)
    a = (tmp_path / "a.json").read_text()
    assert a == '{\n "x": null,\n "y": [\n  1,\n  2.5\n ]\n}'  # to_json's text, no final newline
    assert (tmp_path / "b.json").read_bytes() == b'{"p": "q"}\n'
    assert json.loads(a) == {"x": None, "y": [1, 2.5]}


def test_markdown_and_html_are_written_as_given_in_utf8(tmp_path: Path) -> None:
    write_markdown(tmp_path / "t.md", "| r |\n|---|\n| 1 ± 2 |\n")
    path = write_html(tmp_path / "sub" / "r.html", "<p>é</p>\n")
    assert (tmp_path / "t.md").read_bytes() == "| r |\n|---|\n| 1 ± 2 |\n".encode()
    assert path == tmp_path / "sub" / "r.html" and path.read_bytes() == "<p>é</p>\n".encode()


def test_csv_from_text_or_records(tmp_path: Path) -> None:
    write_csv(tmp_path / "t.csv", "a,b\n1,2\n")
    write_csv(tmp_path / "r.csv", [{"a": 1, "b": "x,y"}, {"a": 2, "b": "z"}])
    write_csv(tmp_path / "c.csv", [{"a": 1, "b": 2}], fieldnames=["b", "a"])
    write_csv(tmp_path / "e.csv", [])
    assert (tmp_path / "t.csv").read_bytes() == b"a,b\n1,2\n"
    assert (tmp_path / "r.csv").read_bytes() == b'a,b\r\n1,"x,y"\r\n2,z\r\n'  # csv module's dialect
    assert (tmp_path / "c.csv").read_bytes() == b"b,a\r\n2,1\r\n"
    assert (tmp_path / "e.csv").read_bytes() == b""


def test_figure_in_the_suffixs_format(tmp_path: Path) -> None:
    from atcon.viz import pyplot

    fig = pyplot().figure(figsize=(1, 1))
    write_figure(tmp_path / "f.png", fig, dpi=20)
    write_figure(tmp_path / "f.svg", fig)
    pyplot().close(fig)
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (tmp_path / "f.svg").read_bytes()
    assert _names(tmp_path) == ["f.png", "f.svg"]


def test_report_is_written_through_the_html_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Path] = []
    real = results_io.write_html
    monkeypatch.setattr(results_io, "write_html", lambda p, t: seen.append(Path(p)) or real(p, t))
    path = report.write_report(tmp_path / "r.html", "T", [report.text("hi")])
    assert seen == [tmp_path / "r.html"] and "<h1>T</h1>" in path.read_text()


def test_files_are_readable_like_plain_open(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert stat.S_IMODE((tmp_path / "b.bin").stat().st_mode) & 0o044  # not mkstemp's 0600


def test_an_exception_while_writing_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "results.md"
    atomic_write_text(target, "old\n")
    with pytest.raises(RuntimeError, match="crash"), atomic_open(target) as f:
        f.write("half of the new")
        raise RuntimeError("crash")
    assert target.read_text() == "old\n"
    assert _names(tmp_path) == ["results.md"]  # no temporary left behind


@pytest.mark.parametrize(
    ("name", "write"),
    [
        ("results.json", lambda p: write_json(p, {"x": object()})),  # not JSON: fails before opening
        ("results.csv", lambda p: write_csv(p, [{"a": 1}, {"b": 2}])),  # a key outside the header
        ("figure.png", lambda p: write_figure(p, _BrokenFigure())),  # fails half-way through the file
    ],
)
def test_a_failed_writer_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Path, name: str, write: Any
) -> None:
    target = tmp_path / name
    target.write_bytes(b"old")
    with pytest.raises((TypeError, ValueError, OSError)):
        write(target)
    assert target.read_bytes() == b"old"
    assert _names(tmp_path) == [name]


def test_a_failed_rename_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "results.json"
    write_json(target, {"v": 1})

    def no_rename(src: str, dst: str) -> None:
        raise OSError("rename failed")

    monkeypatch.setattr(results_io.os, "replace", no_rename)
    with pytest.raises(OSError, match="rename failed"):
        write_json(target, {"v": 2})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"v": 1}
    assert _names(tmp_path) == ["results.json"]


class _BrokenFigure:
    """Writes a few bytes, then fails like a renderer running out of disk."""

    def savefig(self, f: Any, **_kw: Any) -> None:
        f.write(b"\x89PNG partial")
        raise OSError("disk full")
