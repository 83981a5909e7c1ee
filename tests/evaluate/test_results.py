"""Evaluation results: the spec, the bootstrap summary, saving and loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from atcon.evaluate import EvalSpec, EvaluationResult, LocalizationProtocol, classification_metrics
from tests.evaluate.conftest import result


def test_summary_estimates_match_metrics_and_intervals_contain_them() -> None:
    r = result("m", noise=4.0)
    ref = classification_metrics(r.logits, r.labels, "multilabel")
    for k in ("f1_macro", "f1_micro", "map"):
        b = r.metrics[k]
        assert float(b.estimate) == pytest.approx(float(ref[k]))
        assert float(b.low) <= float(b.estimate) <= float(b.high)
        assert float(b.high) - float(b.low) > 0
    assert r.metrics["f1_per_class"].estimate.shape == (3,)


def test_save_load_round_trip(tmp_path: Path) -> None:
    r = result("m", noise=2.0)
    back = EvaluationResult.load(r.save(tmp_path / "r.pt"))
    assert back.name == "m" and back.classes == r.classes
    for k, v in r.metrics.items():
        torch.testing.assert_close(back.metrics[k].low, v.low, equal_nan=True)
    d = back.to_dict()
    assert d["n_pairs"] == r.n_pairs and d["metrics"]["iou"]["value"] == pytest.approx(
        float(r.metrics["iou"].estimate)
    )
    assert back.n_resamples == r.n_resamples and back.seed == r.seed and back.protocol == r.protocol


def test_spec_validates_early() -> None:
    spec = EvalSpec("multiclass", classes=["a", "b"])  # type: ignore[arg-type]
    assert spec.classes == ("a", "b") and spec.protocol == LocalizationProtocol()
    for bad in ({"task": "binary"}, {"n_resamples": 0}, {"confidence": 1.0}, {"batch_size": 0}):
        with pytest.raises(ValueError):
            EvalSpec(**bad)  # type: ignore[arg-type]
