"""Line plots: each line holds the values it was given."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from atcon import viz
from atcon.evaluate import BootstrapResult


def test_pyplot_selects_agg_and_save_closes(tmp_path: Path) -> None:
    plt = viz.pyplot()
    assert plt.get_backend().lower() == "agg"
    fig = plt.figure()
    path = viz.save_figure(fig, tmp_path / "sub" / "f.png")
    assert path.stat().st_size > 0 and not plt.fignum_exists(fig.number)


def test_training_curves_read_numbers_and_skip_empty_columns(tmp_path: Path) -> None:
    (tmp_path / "metrics.csv").write_text("epoch,train_loss,val_f1,note\n0,1.5,,x\n1,0.5,0.25,y\n")
    cols = viz.read_metrics_csv(tmp_path / "metrics.csv")
    assert set(cols) == {"epoch", "train_loss", "val_f1"}
    assert cols["train_loss"] == [1.5, 0.5] and math.isnan(cols["val_f1"][0])
    fig = viz.training_curves_figure({"run": tmp_path})
    loss_ax, val_ax = (ax for ax in fig.axes if ax.get_visible())
    assert [list(line.get_ydata()) for line in loss_ax.lines] == [[1.5, 0.5]]
    assert list(val_ax.lines[0].get_xdata()) == [0.0, 1.0]


def test_training_curves_one_panel_per_quantity(tmp_path: Path) -> None:
    """A consistency loss near -1, an agreement near 1 and a mAP each get their own axis."""
    rows = (
        "epoch,train_loss,lf_consistency,lf_agreement,val_map\n0,2.0,-0.90,1.0,0.20\n1,1.0,-0.95,0.98,0.30\n"
    )
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        (tmp_path / run / "metrics.csv").write_text(rows)
    fig = viz.training_curves_figure({"a": tmp_path / "a", "b": tmp_path / "b"})
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in shown] == ["train_loss", "lf_agreement", "lf_consistency", "val_map"]
    for ax in shown:
        assert len(ax.lines) == 2  # one line per run
    assert list(shown[2].lines[0].get_ydata()) == [-0.90, -0.95]


def test_ablation_curves_one_panel_per_similarity() -> None:
    curves = {
        "supervised": [3.0, 2.0],
        "a/x": [1.0, 0.0],
        "b/x": [0.5, 0.5],
        "a/y": [2.0, 1.0],
        "b/y": [0, 1],
    }
    fig = viz.ablation_curves_figure(curves, ["a", "b"], ["x", "y"])
    assert [ax.get_title() for ax in fig.axes] == [
        "supervised val loss",
        "consistency (x)",
        "consistency (y)",
    ]
    assert list(fig.axes[2].lines[0].get_ydata()) == [2.0, 1.0]


def test_metric_curves_in_percent_against_the_group() -> None:
    class Row:
        def __init__(self, v: float) -> None:
            t = torch.tensor
            self.metrics = {"map": BootstrapResult(t(v), t(v - 0.1), t(v + 0.1))}

    groups = {"2": {"A": Row(0.5), "B": Row(0.25)}, "8": {"A": Row(0.75), "B": Row(0.5)}}
    fig = viz.metric_curves_figure(groups, ["map"])
    (ax,) = fig.axes
    assert ax.get_ylabel() == "mAP (%)" and ax.get_xlabel() == "samples per class"
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [50.0, 75.0])
    np.testing.assert_allclose(ax.lines[1].get_xdata(), [2, 8])


def test_sanity_figure_plots_the_means(tiny: torch.nn.Module) -> None:
    from atcon.evaluate.sanity import cascading_randomization

    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    result = cascading_randomization(tiny, x, target_layer="features")
    fig = viz.sanity_figure(result)
    rank_ax, ssim_ax = fig.axes
    assert rank_ax.get_title() == "Spearman rank correlation" and ssim_ax.get_title() == "SSIM"
    np.testing.assert_allclose(
        ssim_ax.lines[0].get_ydata(), result.mean()["gradcam"]["ssim"].numpy(), rtol=1e-6
    )
    assert [t.get_text() for t in rank_ax.get_xticklabels()] == result.blocks
