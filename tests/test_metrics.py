"""Metrics from one confusion matrix, checked against scikit-learn and torchmetrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, jaccard_score, precision_score, recall_score
from torchmetrics.classification import MulticlassConfusionMatrix

from seglab.evaluation.metrics import confusion_matrix, metrics_from_confusion


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    k, ignore = 5, 255
    target = rng.integers(0, k, size=(4, 37, 41))
    target[rng.random(target.shape) < 0.1] = ignore
    # predictions agree with the target most of the time, so scores are not trivial
    pred = np.where(rng.random(target.shape) < 0.6, target, rng.integers(0, k, target.shape))
    pred[pred == ignore] = 0
    cm = confusion_matrix(target, pred, k, ignore)
    m = metrics_from_confusion(cm)
    keep = target.ravel() != ignore
    t, p = target.ravel()[keep], pred.ravel()[keep]
    labels = list(range(k))
    iou = jaccard_score(t, p, labels=labels, average=None)
    f1 = f1_score(t, p, labels=labels, average=None)
    prec = precision_score(t, p, labels=labels, average=None)
    rec = recall_score(t, p, labels=labels, average=None)
    for c in range(k):
        pc = m["per_class"][str(c)]
        assert pc["iou"] == pytest.approx(iou[c])
        assert pc["dice"] == pytest.approx(f1[c])
        assert pc["precision"] == pytest.approx(prec[c])
        assert pc["recall"] == pytest.approx(rec[c])
    assert m["mIoU"] == pytest.approx(jaccard_score(t, p, labels=labels, average="macro"))
    assert m["mDice"] == pytest.approx(f1_score(t, p, labels=labels, average="macro"))
    assert m["pixel_accuracy"] == pytest.approx(accuracy_score(t, p))
    assert m["mean_class_accuracy"] == pytest.approx(rec.mean())
    freq = np.bincount(t, minlength=k) / t.size
    assert m["fw_iou"] == pytest.approx((freq * iou).sum())
    # macro mIoU is not the flattering "micro" IoU over pooled pixels
    micro = jaccard_score(t, p, labels=labels, average="micro")
    assert m["mIoU"] != pytest.approx(micro)


def test_torchmetrics_confusion_matrix_matches_ours():
    """The training/evaluation path accumulates with torchmetrics (DDP-synced); same counts."""
    rng = np.random.default_rng(3)
    k, ignore = 4, 255
    target = rng.integers(0, k, size=(3, 20, 30))
    target[:, :3] = ignore
    pred = rng.integers(0, k, size=target.shape)
    tm = MulticlassConfusionMatrix(k, ignore_index=ignore, validate_args=False)
    tm.update(torch.from_numpy(pred), torch.from_numpy(target))
    np.testing.assert_array_equal(tm.compute().numpy(), confusion_matrix(target, pred, k, ignore))


def test_absent_class_is_na_not_zero_or_one():
    target = np.array([0, 0, 1, 1, 255])
    pred = np.array([0, 1, 1, 1, 2])  # class 2 predicted only on an ignored pixel
    m = metrics_from_confusion(confusion_matrix(target, pred, 3, 255), ["a", "b", "c"])
    assert m["per_class"]["c"]["iou"] is None and m["per_class"]["c"]["dice"] is None
    assert m["mIoU"] == pytest.approx((0.5 + 2 / 3) / 2)  # mean over the two present classes
    assert m["pixels"] == 4  # the ignored pixel is not counted


def test_class_only_predicted_counts_as_zero():
    target = np.array([0, 0, 0, 0])
    pred = np.array([0, 0, 0, 1])
    m = metrics_from_confusion(confusion_matrix(target, pred, 2), ["a", "b"])
    assert m["per_class"]["b"]["iou"] == 0.0  # a false positive class scores 0, not n/a
    assert m["per_class"]["b"]["recall"] is None
    assert m["mIoU"] == pytest.approx(0.75 / 2)
