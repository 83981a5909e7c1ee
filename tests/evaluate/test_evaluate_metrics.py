import math

import pytest
import torch

from atcon.evaluate import (
    ClassificationMetrics,
    classification_metrics,
    weighted_average_precision,
    weighted_f1,
)
from atcon.evaluate.metrics import binary_predictions_and_targets

# Probabilities of 4 items x 3 classes; class 2 has no positive item.
PROBS = torch.tensor([[0.9, 0.2, 0.6], [0.8, 0.7, 0.1], [0.3, 0.6, 0.4], [0.1, 0.4, 0.3]])
LABELS = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])


def test_multilabel_hand_computed():
    m = classification_metrics(PROBS, LABELS, "multilabel", from_logits=False)
    # c0: tp 1 (item 0), fp 1 (item 1), fn 1 (item 2); c1: tp 2; c2: fp 1.
    torch.testing.assert_close(m["f1_per_class"], torch.tensor([0.5, 1.0, 0.0]))
    torch.testing.assert_close(m["f1_macro"], torch.tensor(0.5))
    torch.testing.assert_close(m["f1_micro"], torch.tensor(6 / 9))  # 2*3 / (2*3 + 2 + 1)
    # c0 ranking: + - + -  -> AP = (1 + 2/3) / 2; c1 ranking: + + - -.
    assert m["ap_per_class"][:2].tolist() == pytest.approx([5 / 6, 1.0])
    assert math.isnan(m["ap_per_class"][2])  # no positives: undefined, not 0
    torch.testing.assert_close(m["map"], torch.tensor(11 / 12))
    assert m["n_positives"].tolist() == [2, 2, 0]


def test_multilabel_logits_are_sigmoided():
    logits = torch.logit(PROBS)
    a = classification_metrics(logits, LABELS)
    b = classification_metrics(PROBS, LABELS, from_logits=False)
    for k in a:
        torch.testing.assert_close(a[k], b[k], equal_nan=True)


def test_threshold_is_strict_and_configurable():
    probs = torch.tensor([[0.5], [0.7]])
    labels = torch.tensor([[1], [1]])
    # 0.5 is not > 0.5: one of two positives found.
    assert float(classification_metrics(probs, labels, from_logits=False)["f1_micro"]) == pytest.approx(2 / 3)
    m = classification_metrics(probs, labels, from_logits=False, threshold=0.4)
    assert float(m["f1_micro"]) == pytest.approx(1.0)


def test_multiclass_hand_computed():
    logits = torch.tensor([[3.0, 0, 0], [0, 3, 0], [0, 2, 1], [0, 0, 3]])
    labels = torch.tensor([0, 1, 2, 2])  # argmax: 0, 1, 1, 2
    m = classification_metrics(logits, labels, "multiclass")
    torch.testing.assert_close(m["f1_per_class"], torch.tensor([1.0, 2 / 3, 2 / 3]))
    torch.testing.assert_close(m["f1_macro"], torch.tensor(7 / 9))
    torch.testing.assert_close(m["f1_micro"], torch.tensor(0.75))  # = accuracy
    # AP is one-vs-rest on softmax probabilities: the multilabel path on one-hot targets.
    onehot = torch.nn.functional.one_hot(labels, 3)
    ref = classification_metrics(logits.softmax(1), onehot, "multilabel", from_logits=False)
    torch.testing.assert_close(m["ap_per_class"], ref["ap_per_class"])
    # class 2: items 3 (+), 2 (+) ranked by p2 above items 0, 1 -> AP 1
    assert float(m["ap_per_class"][2]) == pytest.approx(1.0)


def test_multiclass_absent_class():
    logits = torch.tensor([[3.0, 0, 0], [0, 3, 0], [0, 3, 0]])
    labels = torch.tensor([0, 1, 1])
    m = classification_metrics(logits, labels, "multiclass")
    assert math.isnan(m["ap_per_class"][2])
    torch.testing.assert_close(m["map"], torch.tensor(1.0))
    # torchmetrics' multiclass macro F1 leaves out classes absent from targets and predictions.
    torch.testing.assert_close(m["f1_macro"], torch.tensor(1.0))


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        classification_metrics(PROBS, LABELS, "binary")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        classification_metrics(PROBS, LABELS[:, 0], "multilabel")
    with pytest.raises(ValueError):
        classification_metrics(PROBS, LABELS, "multiclass")
    with pytest.raises(ValueError):
        ClassificationMetrics(threshold=1.5)


def test_average_precision_with_ties():
    scores = torch.tensor([[0.8], [0.8], [0.5]])
    target = torch.tensor([[1], [0], [1]])
    # One threshold for the tied pair: precision 1/2 at recall 1/2, then 2/3 at recall 1.
    m = classification_metrics(scores, target, from_logits=False)
    assert float(m["ap_per_class"][0]) == pytest.approx(0.25 + 1 / 3)
    ap = weighted_average_precision(scores, target.bool(), torch.ones(1, 3))
    assert float(ap[0, 0]) == pytest.approx(0.25 + 1 / 3)


@pytest.mark.parametrize("task", ["multilabel", "multiclass"])
def test_weighted_equals_repeated_items(task):
    g = torch.Generator().manual_seed(0)
    n, c = 60, 4
    if task == "multilabel":
        targets = (torch.rand(n, c, generator=g) < 0.3).long()
        scores = torch.randn(n, c, generator=g) + targets
    else:
        targets = torch.randint(c, (n,), generator=g)
        scores = torch.randn(n, c, generator=g) + torch.nn.functional.one_hot(targets, c)
    scores = (scores * 2).round() / 2  # many ties
    if task == "multilabel":
        targets[torch.rand(n, c, generator=g) < 0.1] = -1  # ignored entries
    else:
        targets[torch.rand(n, generator=g) < 0.1] = -1  # ignored items
    metric = ClassificationMetrics(task)
    weights = torch.randint(0, 3, (5, n), generator=g).float()
    weights[:, 0] = 1  # never empty
    batched = metric.resampled(scores, targets, weights)
    for r in range(weights.shape[0]):
        idx = torch.repeat_interleave(torch.arange(n), weights[r].long())
        ref = metric(scores[idx], targets[idx])
        for k, v in ref.items():
            torch.testing.assert_close(batched[k][r], v, equal_nan=True, atol=1e-6, rtol=1e-5)


def test_weighted_f1_unit_weights_match():
    pred, onehot, _ = binary_predictions_and_targets(PROBS, LABELS, from_logits=False)
    f = weighted_f1(pred, onehot, torch.ones(1, 4))
    torch.testing.assert_close(f["f1_per_class"][0], torch.tensor([0.5, 1.0, 0.0]))
    torch.testing.assert_close(f["f1_micro"][0], torch.tensor(2 / 3))


def test_ignored_multilabel_entries_are_left_out():
    labels = LABELS.clone()
    labels[1, 0] = -1  # drop item 1 from class 0 only (a false positive there)
    m = classification_metrics(PROBS, labels, from_logits=False)
    # c0 now: tp 1, fn 1 -> F1 2/3; ranking + + - over items 0, 2, 3 -> AP 1.
    assert m["f1_per_class"].tolist() == pytest.approx([2 / 3, 1.0, 0.0])
    assert m["ap_per_class"][0].item() == pytest.approx(1.0)
    # Class 1 is unchanged, and the entry is not a true positive.
    assert m["ap_per_class"][1].item() == pytest.approx(1.0)
    assert float(m["f1_micro"]) == pytest.approx(6 / 8)


def test_ignored_multiclass_items_are_dropped():
    logits = torch.tensor([[3.0, 0, 0], [0, 3, 0], [0, 2, 1], [0, 0, 3]])
    labels = torch.tensor([0, 1, -1, 2])
    m = classification_metrics(logits, labels, "multiclass")
    keep = labels >= 0
    ref = classification_metrics(logits[keep], labels[keep], "multiclass")
    for k in m:
        torch.testing.assert_close(m[k], ref[k], equal_nan=True)
    assert float(m["f1_micro"]) == 1.0


def test_labels_of_collated_batches() -> None:
    from atcon.evaluate import IGNORE, labels_of

    target = {
        "labels": torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
        "ignore": torch.tensor([[False, True], [False, False]]),
    }
    got = labels_of(target, "multilabel")
    assert got.dtype == torch.float32 and got.tolist() == [[1.0, IGNORE], [0.0, 1.0]]
    assert labels_of({"labels": [[0, 1]]}, "multilabel").tolist() == [[0.0, 1.0]]  # no ignore key
    clips = labels_of({"label": torch.tensor([2, 0])}, "multiclass")
    assert clips.dtype == torch.long and clips.tolist() == [2, 0]


def test_multiclass_accuracy_is_the_share_of_kept_items_whose_argmax_is_their_class():
    from sklearn.metrics import accuracy_score

    g = torch.Generator().manual_seed(3)
    labels = torch.randint(4, (50,), generator=g)
    logits = torch.randn(50, 4, generator=g) + torch.nn.functional.one_hot(labels, 4)
    labels[torch.rand(50, generator=g) < 0.2] = -1  # ignored items
    m = classification_metrics(logits, labels, "multiclass")
    keep = labels >= 0
    want = accuracy_score(labels[keep].numpy(), logits[keep].argmax(1).numpy())
    assert 0 < want < 1 and float(m["accuracy"]) == pytest.approx(want)
    # Multi-label results have no single accuracy.
    assert "accuracy" not in classification_metrics(PROBS, LABELS, from_logits=False)
    weights = torch.ones(1, 50)
    assert float(ClassificationMetrics("multiclass").resampled(logits, labels, weights)["accuracy"][0]) == (
        pytest.approx(want)
    )
