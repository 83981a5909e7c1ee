"""Markdown and CSV renderings of evaluation results and paired comparisons."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence

from torch import Tensor

from atcon.evaluate.bootstrap import BootstrapResult
from atcon.evaluate.comparison import Comparison, comparisons_against
from atcon.evaluate.results import CLASSIFICATION_KEYS, PAIR_KEYS, EvaluationResult, metric_label, result_rows


def _num(t: Tensor | float, scale: float, digits: int = 1) -> str:
    v = float(t) * scale
    return "n/a" if math.isnan(v) else f"{v:.{digits}f}"


def _p(p: float) -> str:
    if math.isnan(p):
        return "n/a"
    return f"{p:.3f}" if p >= 0.001 else "<0.001"


def format_interval(r: BootstrapResult, *, percent: bool = True, digits: int = 1) -> str:
    """``"value [low-high]"`` of a scalar result (percent by default)."""
    scale = 100.0 if percent else 1.0
    if math.isnan(float(r.estimate)):
        return "n/a"
    return f"{_num(r.estimate, scale, digits)} [{_num(r.low, scale, digits)}-{_num(r.high, scale, digits)}]"


def table_columns(results: Sequence[EvaluationResult]) -> list[str]:
    """The scalar metrics present in every result, in the canonical order (per-group metrics last)."""
    keys = [*CLASSIFICATION_KEYS, *PAIR_KEYS]
    grouped = [k for k in results[0].metrics if "@" in k] if results else []
    return [k for k in (*keys, *grouped) if all(k in r.metrics for r in results)]


def comparison_table(comparison: Comparison, percent: bool = True) -> str:
    """Markdown table of a paired comparison: metric, A, B, difference [CI], p-value, star."""
    scale = 100.0 if percent else 1.0
    unit = " (%)" if percent else ""
    lines = [
        f"| metric{unit} | {comparison.name_a} | {comparison.name_b} | difference [CI] | p | |",
        "|---|---:|---:|---:|---:|:-:|",
    ]
    for key, t in comparison.tests.items():
        if t.estimate_a.numel() != 1:
            continue
        lines.append(
            f"| {metric_label(key)} | {_num(t.estimate_a, scale)} | {_num(t.estimate_b, scale)} | "
            f"{_num(t.difference, scale)} [{_num(t.low, scale)}, {_num(t.high, scale)}] | "
            f"{_p(comparison.p_value(key))} | {comparison.star(key)} |"
        )
    return "\n".join(lines)


def results_table(
    results: Mapping[str, EvaluationResult] | Sequence[EvaluationResult],
    *,
    reference: str | None = None,
    comparisons: Mapping[str, Comparison] | None = None,
    columns: Sequence[str] | None = None,
    percent: bool = True,
    counts: bool = True,
) -> str:
    """Markdown table: one row per method, ``"value [low-high]"`` per metric, ``*`` when p < alpha vs the reference.

    Args:
        results: the methods (rows), by name or as results carrying their ``name``.
        reference: name of the row the others are tested against (paired bootstrap); no stars
            when None.
        comparisons: precomputed tests by row name (from :func:`compare`), to avoid recomputing.
        columns: metric keys (default: every scalar metric all rows have).
        percent: show values in percent.
        counts: add the true-positive pair and degenerate-map counts.

    Returns:
        The table as Markdown text (header, alignment row, one line per method).
    """
    rows = result_rows(results)
    if not rows:
        raise ValueError("no results to tabulate")
    cols = list(columns) if columns is not None else table_columns(rows)
    tests: dict[str, Comparison] = dict(comparisons or {})
    if reference is not None:
        missing = {r.name: r for r in rows if r.name != reference and r.name not in tests}
        if missing:
            tests.update({k: v for k, v in comparisons_against(rows, reference).items() if k in missing})
    unit = " (%)" if percent else ""
    head = ["method", *(metric_label(c) + unit for c in cols)]
    if counts:
        head.append("TP pairs (degenerate)")
    lines = [md_row(head), "|---" + "|---:" * (len(head) - 1) + "|"]
    for r in rows:
        cells = [r.name + (" (ref.)" if r.name == reference else "")]
        for c in cols:
            text = format_interval(r.metrics[c], percent=percent) if c in r.metrics else "n/a"
            if r.name in tests and r.name != reference:
                text += tests[r.name].star(c)
            cells.append(text)
        if counts:
            cells.append(f"{r.n_pairs} ({r.n_degenerate})")
        lines.append(md_row(cells))
    return "\n".join(lines)


def md_row(cells: Sequence[str]) -> str:
    """One Markdown table row; a ``|`` or line break inside a cell (a class or run name) is
    escaped so it cannot split the row."""
    return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def per_class_table(
    results: Sequence[EvaluationResult], key: str = "f1_per_class", percent: bool = True
) -> str:
    """Markdown table of a per-class metric: one row per class, one column per method."""
    rows = list(results)
    scale = 100.0 if percent else 1.0
    head = ["class", *(r.name for r in rows)]
    lines = [md_row(head), "|---" + "|---:" * len(rows) + "|"]
    for c, cname in enumerate(rows[0].classes):
        cells = [cname]
        for r in rows:
            m = r.metrics[key]
            est, lo, hi = (float(t[c]) for t in (m.estimate, m.low, m.high))
            cells.append(
                "n/a" if math.isnan(est) else f"{_num(est, scale)} [{_num(lo, scale)}-{_num(hi, scale)}]"
            )
        lines.append(md_row(cells))
    return "\n".join(lines)


def results_csv(
    results: Sequence[EvaluationResult], comparisons: Mapping[str, Comparison] | None = None
) -> str:
    """CSV text with one row per (method, metric, class): value, low, high, p-value vs the reference."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["method", "metric", "class", "value", "low", "high", "p_value"])
    for r in results:
        comp = (comparisons or {}).get(r.name)
        for key, m in r.metrics.items():
            if m.estimate.numel() == 1:
                p = comp.p_value(key) if comp is not None else math.nan
                w.writerow([r.name, key, "", float(m.estimate), float(m.low), float(m.high), p])
                continue
            test = comp.tests.get(key) if comp is not None else None
            for c, cname in enumerate(r.classes):
                p = float(test.p_value[c]) if test is not None else math.nan
                w.writerow([r.name, key, cname, float(m.estimate[c]), float(m.low[c]), float(m.high[c]), p])
    return buf.getvalue()
