"""Per-group metrics (aligned / conflicting items) and the energy in regions to avoid, end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from atcon.data import ImageManifestDataset, image_eval_transform
from atcon.evaluate import (
    ClassificationMetrics,
    EvalSpec,
    EvaluationResult,
    bootstrap_ci,
    compare,
    evaluate_model,
    item_groups,
    paired_bootstrap_test,
    results_table,
    summarize,
)
from atcon.models import build_model
from tests.data.userdata import single_label_set, write_csv


def _task(n: int = 120, seed: int = 0, noise: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(3, (n,), generator=g)
    logits = torch.nn.functional.one_hot(labels, 3).float() * 2 + noise * torch.randn(n, 3, generator=g)
    return logits, labels


def test_item_groups_index_names_and_leave_unnamed_items_out() -> None:
    index, names = item_groups(["b", "", "a", None, "b"])
    assert names == ("a", "b") and index.tolist() == [1, -1, 0, -1, 1]
    assert item_groups(["", ""])[1] == ()


def test_group_metrics_equal_the_metric_on_the_group_s_items() -> None:
    logits, labels = _task()
    names = ["conflicting" if i % 3 else "aligned" for i in range(len(labels))]
    groups, group_names = item_groups(names)
    spec = EvalSpec("multiclass", n_resamples=200, seed=4)
    r = summarize(
        logits,
        labels,
        torch.zeros(0, 2, dtype=torch.long),
        None,
        None,
        spec,
        groups=groups,
        group_names=group_names,
    )
    for g in group_names:
        members = torch.tensor([i for i, n in enumerate(names) if n == g])
        want = bootstrap_ci(
            ClassificationMetrics("multiclass"), logits[members], labels[members], n_resamples=200, seed=4
        )
        for key in ("accuracy", "f1_macro"):
            got = r.metrics[f"{key}@{g}"]
            assert torch.equal(got.estimate, want[key].estimate) and torch.equal(got.low, want[key].low)
    assert "map@aligned" not in r.metrics  # mAP per group for multi-label tasks only
    assert r.group_counts() == {"aligned": 40, "conflicting": 80}
    assert r.to_dict()["groups"] == {"aligned": 40, "conflicting": 80}
    # The paired test of a group resamples that group's items of both models.
    other = summarize(
        logits.roll(1, 1) * 0.3 + logits,
        labels,
        torch.zeros(0, 2, dtype=torch.long),
        None,
        None,
        spec,
        groups=groups,
        group_names=group_names,
    )
    c = compare(r, other)
    members = groups == 1
    want_p = paired_bootstrap_test(
        ClassificationMetrics("multiclass"),
        logits[members],
        other.logits[members],
        labels[members],
        n_resamples=200,
        seed=4,
    )["accuracy"].p_value
    assert c.p_value("accuracy@conflicting") == pytest.approx(float(want_p))
    table = results_table([r, other], reference=other.name)
    assert "Accuracy (conflicting) (%)" in table.splitlines()[0]


def test_groups_survive_saving_and_loading(tmp_path: Path) -> None:
    logits, labels = _task(seed=2)
    groups, names = item_groups(["x" if i % 2 else "y" for i in range(len(labels))])
    spec = EvalSpec("multiclass", n_resamples=100)
    r = summarize(
        logits,
        labels,
        torch.zeros(0, 2, dtype=torch.long),
        None,
        None,
        spec,
        groups=groups,
        group_names=names,
    )
    back = EvaluationResult.load(r.save(tmp_path / "r.pt"))
    assert back.group_names == names and torch.equal(back.groups, groups)  # type: ignore[arg-type]
    assert {k: float(v.estimate) for k, v in back.metrics.items() if "@" in k} == {
        k: float(v.estimate) for k, v in r.metrics.items() if "@" in k
    }


def test_evaluate_reads_groups_and_regions_to_avoid_from_the_data(tmp_path: Path) -> None:
    images = single_label_set()
    path = write_csv(tmp_path / "m.csv", images)
    ds = ImageManifestDataset(path, transform=image_eval_transform(32))
    torch.manual_seed(0)
    model = build_model("small", 3).eval()
    r = evaluate_model(model, ds, EvalSpec("multiclass", n_resamples=50, batch_size=5))
    assert r.group_names == ("aligned", "conflicting")
    assert r.group_counts() == {g: sum(im.group == g for im in images) for g in r.group_names}
    assert {"accuracy@aligned", "f1_macro@conflicting"} <= set(r.metrics)
    # energy_avoid is defined on the true-positive pairs of images with a region, and nowhere else.
    assert r.localization is not None
    has_region = torch.tensor([bool(images[i].avoid) for i in r.pairs[:, 0].tolist()])
    defined = ~r.localization.energy_avoid.isnan()
    assert torch.equal(defined, has_region & ~r.localization.energy.isnan())
    assert defined.any() and "energy_avoid" in r.metrics
    values = r.localization.energy_avoid[defined]
    assert ((values >= 0) & (values <= 1)).all()
