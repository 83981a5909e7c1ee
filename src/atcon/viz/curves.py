"""Line plots: training curves, the sanity check, the ablation's validation curves, experiment metrics."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atcon.viz._pyplot import pyplot

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from atcon.evaluate.sanity import SanityResult

_SANITY_TITLES = {"rank_correlation": "Spearman rank correlation", "ssim": "SSIM"}


def read_metrics_csv(path: str | Path) -> dict[str, list[float]]:
    """Numeric columns of a run's ``metrics.csv`` (empty cells and text become ``nan``)."""
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    cols: dict[str, list[float]] = {}
    for row in rows:
        for k, v in row.items():
            try:
                x = float(v) if v not in (None, "") else math.nan
            except ValueError:
                x = math.nan
            cols.setdefault(k, []).append(x)
    return {k: v for k, v in cols.items() if any(not math.isnan(x) for x in v) or k == "epoch"}


def training_curves_figure(runs: Mapping[str, str | Path], columns: int = 3) -> Figure:
    """One panel per logged quantity (losses, each validation metric, each label-free signal)
    against the epoch, one line per run, so quantities on different scales (a consistency loss
    near -1, an agreement near 1, a mAP) never share an axis.

    Args:
        runs: label -> path of a ``metrics.csv`` (or of its run folder).
        columns: panels per row.
    """
    plt = pyplot()
    skip = {"epoch", "step", "lr", "selection", "best"}
    series: dict[str, list[tuple[str, list[float], list[float]]]] = {}
    for label, path in runs.items():
        p = Path(path)
        cols = read_metrics_csv(p / "metrics.csv" if p.is_dir() else p)
        epochs = cols.get("epoch") or [float(i) for i in range(len(next(iter(cols.values()), [])))]
        for k, v in cols.items():
            if k not in skip:
                series.setdefault(k, []).append((label, epochs, v))
    names = sorted(series, key=lambda k: (not k.endswith("loss"), k))  # losses first
    n = max(len(names), 1)
    ncols = min(columns, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, 2.6 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        for label, epochs, values in series[name]:
            ax.plot(epochs, values, marker="o", ms=3, label=label)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if len(runs) > 1:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def sanity_figure(result: SanityResult) -> Figure:
    """Mean similarity (band: +-1 std over samples) against the randomised-through block.

    Two panels (rank correlation, SSIM), one line per map; the x axis runs top down as in
    Adebayo et al.'s figures, starting at the first randomised block.

    Args:
        result: a :func:`~atcon.evaluate.sanity.cascading_randomization` result.
    """
    from atcon.evaluate.sanity import KIND_LABELS, MAP_KINDS, METRICS

    plt = pyplot()
    means, stds = result.mean(), result.std()
    steps = list(range(len(result.blocks)))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharex=True)
    for ax, metric in zip(axes, METRICS):
        for kind in MAP_KINDS:
            mu, sd = means[kind][metric].numpy(), stds[kind][metric].numpy()
            # Dashed mask: its rank correlation coincides with Guided Backprop's (same ranks).
            style = "--" if kind == "mask" else "-"
            ax.plot(steps, mu, style, marker="o", ms=4, label=KIND_LABELS[kind])
            ax.fill_between(steps, mu - sd, mu + sd, alpha=0.15)
        ax.axhline(1.0, color="grey", ls="--", lw=0.8)  # the trained model's maps vs themselves
        ax.axhline(0.0, color="grey", lw=0.5)
        ax.set_title(_SANITY_TITLES[metric])
        ax.set_xticks(steps, result.blocks, rotation=45, ha="right")
        ax.set_xlabel("randomised through (top down)")
        ax.set_ylim(min(-0.1, ax.get_ylim()[0]), 1.05)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"similarity to trained maps (mean of {result.n_items})")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def ablation_curves_figure(
    curves: Mapping[str, Sequence[float]], resolutions: Sequence[str], similarities: Sequence[str]
) -> Figure:
    """Validation curves of the ablation (Table 4): the supervised loss, then one panel per similarity.

    Args:
        curves: ``"supervised"`` and ``"<resolution>/<similarity>"`` -> value per epoch.
        resolutions: the resolutions (one line each per panel).
        similarities: the similarities (one panel each).
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, len(similarities) + 1, figsize=(4 * (len(similarities) + 1), 3))
    axes[0].plot(curves["supervised"], color="black")
    axes[0].set_title("supervised val loss")
    for ax, s in zip(axes[1:], similarities):
        for r in resolutions:
            ax.plot(curves[f"{r}/{s}"], label=r)
        ax.set_title(f"consistency ({s})")
        ax.set_xlabel("epoch")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def metric_curves_figure(
    groups: Mapping[str, Mapping[str, Any]], keys: Sequence[str], xlabel: str = "samples per class"
) -> Figure:
    """One panel per metric: each method's value (in %, band: its interval) against a numeric group.

    Args:
        groups: group (an integer as text, e.g. samples per class) -> method -> an object whose
            ``metrics[key]`` is a :class:`~atcon.evaluate.BootstrapResult` (an evaluation result
            or a seed-averaged row); every group has the same methods.
        keys: metric keys (``"f1_macro"``, ``"map"``, ...).
        xlabel: label of the x axis.
    """
    from atcon.evaluate.results import LABELS

    plt = pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5), squeeze=False)
    xs = [int(g) for g in groups]
    methods = list(next(iter(groups.values())))
    for ax, key in zip(axes[0], keys):
        for m in methods:
            ms = [groups[g][m].metrics[key] for g in groups]
            ax.plot(xs, [100 * float(v.estimate) for v in ms], marker="o", label=m)
            ax.fill_between(
                xs, [100 * float(v.low) for v in ms], [100 * float(v.high) for v in ms], alpha=0.15
            )
        ax.set_xlabel(xlabel)
        ax.set_ylabel(LABELS.get(key, key) + " (%)")
        ax.set_xticks(xs)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig
