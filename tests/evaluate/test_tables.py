"""Markdown and CSV tables of results and comparisons."""

from __future__ import annotations

from atcon.evaluate import compare, comparison_table, per_class_table, results_csv, results_table
from tests.evaluate.conftest import result


def test_tables_show_values_intervals_and_stars() -> None:
    good, bad = result("good", noise=0.5, iou_shift=0.3), result("bad", noise=6.0)
    comp = compare(good, bad)
    table = results_table([bad, good], reference="bad", comparisons={"good": comp})
    lines = table.splitlines()
    assert lines[0].startswith("| method | F1 (macro) (%)") and "IoU (%)" in lines[0]
    assert lines[2].startswith("| bad (ref.) |") and "*" not in lines[2]
    assert "*" in lines[3]
    cell = lines[3].split("|")[2].strip()
    v = float(good.metrics["f1_macro"].estimate) * 100
    lo, hi = (float(getattr(good.metrics["f1_macro"], k)) * 100 for k in ("low", "high"))
    assert cell == f"{v:.1f} [{lo:.1f}-{hi:.1f}]*"
    # Recomputing the tests in the table gives the same stars.
    assert results_table({"bad": bad, "good": good}, reference="bad") == table
    md = comparison_table(comp).splitlines()
    assert md[0] == "| metric (%) | good | bad | difference [CI] | p | |"
    f1 = next(line for line in md if line.startswith("| F1 (macro) |"))
    p = comp.p_value("f1_macro")
    assert f1.endswith("| * |") and f"| {'<0.001' if p < 0.001 else f'{p:.3f}'} |" in f1
    assert "x" in per_class_table([bad, good]).splitlines()[2]
    rows = results_csv([bad, good], {"good": comp}).splitlines()
    assert rows[0] == "method,metric,class,value,low,high,p_value"
    assert any(r.startswith("good,f1_macro,,") and not r.endswith("nan") for r in rows)


def test_a_pipe_in_a_class_or_run_name_cannot_split_a_row() -> None:
    from atcon.evaluate.tables import md_row

    row = md_row(["a|b", "line\nbreak", "12.5 [10.0-15.0]"])
    assert row == "| a\\|b | line break | 12.5 [10.0-15.0] |"
    assert row.replace("\\|", "").count("|") == 4  # three cells, four separators
