"""ISBI 2012 EM membranes: train on slices 00-23, report on 24-29.

    .venv/bin/python benchmarks/isbi2012_unet.py [--minutes 10] [--tag NAME --set KEY=VALUE]

Pixel error = 1 - pixel accuracy over the six validation slices. Adapted Rand error:
scikit-image's ``adapted_rand_error`` on connected cell regions (4-connected components of
the "cell" class; membrane pixels are label 0 and, as in the challenge, not scored in the
ground truth), per slice, averaged. Also the share of wrong pixels that sit on a labelled
membrane edge (their 3x3 neighbourhood in the ground truth holds both classes), and the
pixel error when a pixel is called *cell* above other thresholds of its cell probability
than argmax's 0.5 (0.1 to 0.9 in steps of 0.05), on the training slices and on the scored
ones. From those, two more figures: the pixel error on 24-29 at the threshold that is best
on the training slices 00-23 (a choice made without the scored slices), and the challenge's
own rule, the smallest pixel error over the thresholds on the scored slices themselves
(Fiji's ``PixelError``, which the ISBI 2012 leaderboard used, binarises the probability map
at a sweep of thresholds and reports the minimum; that threshold is tuned on the slices it
scores). Writes
benchmarks/results/isbi2012_unet.json.

The scored model is the run's *last* checkpoint: slices 24-29 are the run's validation
split too, so its best checkpoint would be chosen on the slices it is scored on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from _common import ROOT, SHARED, save
from skimage.measure import label
from skimage.metrics import adapted_rand_error

from seglab.config import load_config
from seglab.data.dataset import DatasetDefinition, SegDataset
from seglab.evaluation.evaluate import evaluate
from seglab.inference.predictor import Predictor, class_argmax
from seglab.training.train import train

THRESHOLDS = [round(t, 2) for t in np.arange(0.1, 0.91, 0.05)]


@torch.inference_mode()
def cell_probability(predictor: Predictor, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(argmax mask, probability of *cell*) of one slice; the mask is ``predict``'s."""
    logits = predictor.logits(predictor.to_tensor(image))
    return class_argmax(logits)[0].numpy(), logits.softmax(1)[0, 1].numpy()


class ThresholdErrors:
    """Pixel error per cell-probability threshold, accumulated slice by slice."""

    def __init__(self) -> None:
        self.wrong, self.total = np.zeros(len(THRESHOLDS)), 0

    def add(self, p: np.ndarray, mask: np.ndarray) -> None:
        self.wrong += [((p > t) != (mask == 1)).sum() for t in THRESHOLDS]
        self.total += mask.size

    def rates(self) -> dict[str, float]:
        return {str(t): float(w / self.total) for t, w in zip(THRESHOLDS, self.wrong, strict=True)}


def isbi_scores(run_dir, tta: str | None = None) -> dict:
    """Pixel error and mean adapted Rand error of a run's last model on slices 24-29."""
    last = run_dir / "checkpoints" / "last.ckpt"
    metrics, _ = evaluate(last, "val", tta=tta)
    predictor = Predictor.open(last, backend="torch", tta=tta)
    cfg = load_config(run_dir / "config.yaml")
    data = DatasetDefinition.from_config(cfg.data)
    ds = SegDataset(data, "val")
    rand, wrong, wrong_at_edge = [], 0, 0
    square = np.ones((3, 3), np.uint8)
    on_val, on_train = ThresholdErrors(), ThresholdErrors()
    for i in range(len(ds)):
        image, mask = ds.load(i)
        pred, p = cell_probability(predictor, image)
        on_val.add(p, mask)
        cell = (mask == 1).astype(np.uint8)
        edge = cv2.dilate(cell, square) != cv2.erode(cell, square)
        miss = pred != mask
        wrong += int(miss.sum())
        wrong_at_edge += int((miss & edge).sum())
        are, _, _ = adapted_rand_error(
            label(mask == 1, connectivity=1), label(pred == 1, connectivity=1)
        )
        rand.append(float(are))
    train = SegDataset(data, "train")
    for i in range(len(train)):
        image, mask = train.load(i)
        on_train.add(cell_probability(predictor, image)[1], mask)
    by_t = {"train": on_train.rates(), "val": on_val.rates()}
    chosen = min(by_t["train"], key=by_t["train"].get)
    return {
        "metrics": metrics,
        "pixel_error": 1 - metrics["pixel_accuracy"],
        "adapted_rand_error": float(np.mean(rand)),
        "adapted_rand_error_per_slice": rand,
        "errors_at_membrane_edges": wrong_at_edge / max(wrong, 1),
        "pixel_error_by_cell_threshold": by_t,
        "threshold_chosen_on_train": float(chosen),
        "pixel_error_at_train_threshold": by_t["val"][chosen],
        "pixel_error_challenge_rule": min(by_t["val"].values()),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--runs-dir", default=str(ROOT / "benchmarks" / "work"))
    ap.add_argument("--tta", default=None, help="test-time augmentation, e.g. hflip,vflip")
    ap.add_argument("--evaluate-only", type=Path, help="score this earlier run instead")
    ap.add_argument("--set", action="append", default=[], help="extra config overrides")
    ap.add_argument("--tag", help="results name isbi2012_unet_<TAG>.json and run name")
    args = ap.parse_args()
    if not (SHARED / "isbi2012").is_dir():
        sys.exit(f"ISBI 2012 not found at {SHARED / 'isbi2012'}")
    tag = [f"name=isbi2012-unet-{args.tag}"] if args.tag else []
    cfg = load_config(
        ROOT / "configs" / "isbi2012.yaml",
        [f"train.max_minutes={args.minutes}", *tag, *args.set],
    )
    if args.evaluate_only:
        run_dir = args.evaluate_only
        train_min = json.loads((run_dir / "summary.json").read_text())["train_seconds"] / 60
    else:
        t0 = time.monotonic()
        run_dir = train(cfg, Path(args.runs_dir))
        train_min = (time.monotonic() - t0) / 60
    scores = isbi_scores(run_dir, args.tta)
    metrics = scores["metrics"]
    print(
        f"ISBI 2012 val (slices 24-29): pixel error {scores['pixel_error']:.4f}  "
        f"adapted Rand error {scores['adapted_rand_error']:.4f}  "
        f"errors on membrane edges {100 * scores['errors_at_membrane_edges']:.0f}%  "
        f"mIoU {100 * metrics['mIoU']:.2f}%  (trained {train_min:.1f} min)\n"
        f"cell threshold chosen on slices 00-23: {scores['threshold_chosen_on_train']}, "
        f"pixel error there {scores['pixel_error_at_train_threshold']:.4f}; "
        f"challenge rule (best threshold on 24-29) {scores['pixel_error_challenge_rule']:.4f}"
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    save(
        "isbi2012_unet" + (f"_{args.tag}" if args.tag else "") + ("_tta" if args.tta else ""),
        {
            "pixel_error": scores["pixel_error"],
            "adapted_rand_error": scores["adapted_rand_error"],
            "adapted_rand_error_per_slice": scores["adapted_rand_error_per_slice"],
            "errors_at_membrane_edges": scores["errors_at_membrane_edges"],
            "pixel_error_by_cell_threshold": scores["pixel_error_by_cell_threshold"],
            "threshold_chosen_on_train": scores["threshold_chosen_on_train"],
            "pixel_error_at_train_threshold": scores["pixel_error_at_train_threshold"],
            "pixel_error_challenge_rule": scores["pixel_error_challenge_rule"],
            "mIoU": metrics["mIoU"],
            "per_class_iou": {k: v["iou"] for k, v in metrics["per_class"].items()},
            "train_minutes": round(train_min, 2),
            "tta": args.tta,
            "checkpoint": "last",
            "epochs": summary["epochs"],
            "run_dir": str(run_dir),
            "config": cfg.model_dump(mode="json"),
        },
    )


if __name__ == "__main__":
    main()
