"""Markdown tables of experiment rows (seed-averaged figures with intervals and stars) and their
flat records for JSON/CSV.

``groups`` map a group (samples per class, architecture) to ``{method: Row}``; ``p_values`` map
a group to ``{method: {metric: p-value against the method's reference}}``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from atcon.experiments.aggregate import Row, cell


def metric_table(
    groups: dict[str, dict[str, Row]],
    p_values: dict[str, dict[str, dict[str, float]]],
    keys: Sequence[str],
    group_title: str,
) -> str:
    """Rows = (group, method); columns = metrics; cells ``mean [CI]`` with stars vs the reference."""
    from atcon.evaluate.results import metric_label

    head = [
        group_title,
        "method",
        *(metric_label(k) + " (%)" for k in keys),
        "seed sd (first metric)",
        "TP pairs",
        "selected epoch",
    ]
    lines = ["| " + " | ".join(head) + " |", "|---|---" + "|---:" * (len(head) - 2) + "|"]
    for group, rows in groups.items():
        for name, row in rows.items():
            ps = p_values.get(group, {}).get(name)
            sd = row.seed_sd(keys[0])
            cells = [group, name, *(cell(row, k, ps) for k in keys)]
            cells += ["n/a" if math.isnan(sd) else f"{100 * sd:.1f}", "/".join(map(str, row.n_pairs))]
            cells.append("/".join(map(str, row.extra.get("best_epochs", []))))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pivot_table(
    groups: dict[str, dict[str, Row]], p_values: dict[str, dict[str, dict[str, float]]], key: str
) -> str:
    """Table 2 shape: rows = samples per class, columns = methods, one metric."""
    methods = list(next(iter(groups.values())))
    lines = ["| samples/class | " + " | ".join(methods) + " |", "|---" + "|---:" * len(methods) + "|"]
    for group, rows in groups.items():
        cells = [cell(rows[m], key, p_values.get(group, {}).get(m)) if m in rows else "n/a" for m in methods]
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_class_table(rows: dict[str, Row], p_values: dict[str, dict[str, float]]) -> str:
    """Table 1 shape: rows = methods, columns = mean F1 then per-class F1 (seed means)."""
    first = next(iter(rows.values()))
    lines = [
        "| method | mean F1 (%) | " + " | ".join(first.classes) + " |",
        "|---|---:" + "|---:" * len(first.classes) + "|",
    ]
    for name, row in rows.items():
        per = row.metrics["f1_per_class"].estimate
        cells = [cell(row, "f1_macro", p_values.get(name)), *(f"{100 * float(v):.1f}" for v in per)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def flat_rows(
    groups: dict[str, dict[str, Row]], p_values: dict[str, dict[str, dict[str, float]]], refs: dict[str, str]
) -> list[dict[str, Any]]:
    """One record per (group, method, scalar metric): value, interval, seeds, reference, p-value."""
    out = []
    for group, rows in groups.items():
        for name, row in rows.items():
            for key, m in row.metrics.items():
                if m.estimate.numel() != 1:
                    continue
                out.append(
                    {
                        "group": group,
                        "method": name,
                        "metric": key,
                        "value": float(m.estimate),
                        "low": float(m.low),
                        "high": float(m.high),
                        "seed_sd": row.seed_sd(key),
                        "seeds": row.seed_values.get(key, []),
                        "reference": refs.get(name, ""),
                        "p_value": p_values.get(group, {}).get(name, {}).get(key, math.nan),
                        "best_epochs": row.extra.get("best_epochs", []),
                    }
                )
    return out
