"""Segmentation metrics, all derived from one confusion matrix accumulated over a split.

Definitions (``cm[t, p]`` counts pixels of true class t predicted as p; ignore pixels are
never counted):

* IoU_c = TP / (TP + FP + FN); Dice_c = 2TP / (2TP + FP + FN)
* a class absent from both ground truth and prediction has IoU and Dice n/a (``None``),
  not 0 or 1, and is left out of the means
* mIoU = macro mean of IoU_c over classes (not "micro" IoU over pooled pixels)
* pixel accuracy = sum TP / all pixels; class accuracy_c (recall) = TP / (TP + FN)
* frequency-weighted IoU = sum_c freq_c * IoU_c with freq_c the class's share of pixels
"""

from __future__ import annotations

import math

import numpy as np


def confusion_matrix(
    target: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int | None = None
) -> np.ndarray:
    """``num_classes x num_classes`` int64 counts; ``target == ignore_index`` is skipped."""
    t = np.asarray(target).ravel().astype(np.int64)
    p = np.asarray(pred).ravel().astype(np.int64)
    keep = (t >= 0) & (t < num_classes)
    if ignore_index is not None:
        keep &= t != ignore_index
    idx = t[keep] * num_classes + p[keep]
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else math.nan


def metrics_from_confusion(cm: np.ndarray, class_names: list[str] | None = None) -> dict:
    """Per-class and mean metrics from a confusion matrix; n/a values are ``None``."""
    cm = np.asarray(cm, dtype=np.float64)
    k = cm.shape[0]
    names = class_names or [str(i) for i in range(k)]
    tp = np.diag(cm)
    gt = cm.sum(axis=1)
    pr = cm.sum(axis=0)
    fp, fn = pr - tp, gt - tp
    total = cm.sum()
    iou = _div(tp, tp + fp + fn)
    dice = _div(2 * tp, 2 * tp + fp + fn)
    precision = _div(tp, pr)
    recall = _div(tp, gt)
    freq = gt / total if total else np.zeros(k)
    fw = float(np.nansum(freq * np.nan_to_num(iou))) if total else math.nan

    def clean(v: float) -> float | None:
        return None if math.isnan(v) else float(v)

    per_class = {
        n: {
            "iou": clean(iou[i]),
            "dice": clean(dice[i]),
            "precision": clean(precision[i]),
            "recall": clean(recall[i]),
            "pixels": int(gt[i]),
        }
        for i, n in enumerate(names)
    }
    return {
        "mIoU": clean(_nanmean(iou)),
        "mDice": clean(_nanmean(dice)),
        "pixel_accuracy": clean(float(tp.sum() / total) if total else math.nan),
        "mean_class_accuracy": clean(_nanmean(recall)),
        "fw_iou": clean(fw),
        "pixels": int(total),
        "per_class": per_class,
    }


def image_miou(
    target: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int | None
) -> float | None:
    """mIoU of one image (classes absent from both target and prediction left out)."""
    cm = confusion_matrix(target, pred, num_classes, ignore_index)
    return metrics_from_confusion(cm, [str(i) for i in range(num_classes)])["mIoU"]
