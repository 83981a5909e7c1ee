"""Paired comparison of two results on the same items."""

from __future__ import annotations

import pytest

from atcon.evaluate import EvalSpec, compare, comparisons_against, summarize
from tests.evaluate.conftest import result, synthetic


def test_compare_stars_only_real_differences() -> None:
    good, bad = result("good", noise=0.5, iou_shift=0.3), result("bad", noise=6.0)
    same = compare(bad, bad)
    assert same.p_value("f1_macro") == 1.0 and same.star("f1_macro") == ""
    comp = compare(good, bad)
    assert comp.p_value("f1_macro") < 0.05 and comp.star("f1_macro") == "*"
    assert comp.star("iou") == "*"
    assert comp.name_a == "good" and comp.name_b == "bad"
    against = comparisons_against({"bad": bad, "better": good}, "bad")
    assert list(against) == ["better"] and against["better"].name_a == "better"
    with pytest.raises(ValueError, match="reference 'nope'"):
        comparisons_against([bad, good], "nope")


def test_compare_needs_the_same_items() -> None:
    a = result("a", 1.0)
    logits, labels, pairs = synthetic(n=50)
    b = summarize(logits, labels, pairs, None, None, EvalSpec(classes=("x", "y", "z"), n_resamples=10))
    with pytest.raises(ValueError, match="same items"):
        compare(a, b)
