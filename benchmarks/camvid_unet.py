"""CamVid: a model from scratch, fixed wall-clock training budget, test mIoU at 360x480.

    .venv/bin/python benchmarks/camvid_unet.py [--minutes 30] [--model deeplabv3plus]
    .venv/bin/python benchmarks/camvid_unet.py --config configs/camvid-realtime.yaml \
        --tag realtime-distilled --set distill.teacher=benchmarks/work/camvid-unet-run1

Default: U-Net-ResNet18. ``--model NAME`` trains another architecture of the registry with
its default encoder and the same recipe (results: benchmarks/results/camvid_<NAME>.json);
``--config`` another recipe, ``--tag`` the results name (camvid_<TAG>.json).

Trains with configs/camvid.yaml (train split only; val for model selection) for the
budget, then evaluates the best checkpoint on the 233 test images over the 11 classes
(void ignored) at full resolution, and writes benchmarks/results/camvid_unet.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _common import ROOT, SHARED, save

from seglab.config import load_config
from seglab.evaluation.evaluate import evaluate
from seglab.training.train import train


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--runs-dir", type=Path, default=ROOT / "benchmarks" / "work")
    ap.add_argument("--model", default="unet", help="architecture (seglab models)")
    ap.add_argument("--evaluate-only", type=Path, help="evaluate this earlier run instead")
    ap.add_argument("--set", action="append", default=[], help="extra config overrides")
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "camvid.yaml")
    ap.add_argument("--tag", help="results name camvid_<TAG>.json (default: the model)")
    ap.add_argument("--tta", help="evaluate with test-time augmentation, e.g. hflip,0.75,1.25")
    args = ap.parse_args()
    if not (SHARED / "camvid").is_dir():
        sys.exit(f"CamVid not found at {SHARED / 'camvid'}; see ../shared/datasets/README.md")
    arch = (
        []
        if args.model == "unet"
        else [f"model.name={args.model}", "model.encoder=null", f"name=camvid-{args.model}"]
    )
    if args.tag:
        arch.append(f"name=camvid-{args.tag}")
    cfg = load_config(args.config, [f"train.max_minutes={args.minutes}", *arch, *args.set])
    if args.evaluate_only:  # a run this script trained earlier (its evaluation failed)
        run_dir = args.evaluate_only
        train_s = json.loads((run_dir / "summary.json").read_text())["train_seconds"]
    else:
        t0 = time.monotonic()
        run_dir = train(cfg, args.runs_dir)
        train_s = time.monotonic() - t0
    summary = json.loads((run_dir / "summary.json").read_text())
    epochs = json.loads((run_dir / "metrics.json").read_text())
    img_s = [e["images_per_s"] for e in epochs if e["images_per_s"]]
    metrics, out = evaluate(run_dir, "test", tta=args.tta)
    print(
        f"\nCamVid test ({metrics['images']} images, 360x480, 11 classes): "
        f"mIoU {100 * metrics['mIoU']:.2f}%  pixel accuracy {100 * metrics['pixel_accuracy']:.2f}%"
    )
    for name, m in metrics["per_class"].items():
        print(f"  {name:12s} IoU {100 * m['iou']:6.2f}%")
    print(
        f"training: {train_s / 60:.1f} min wall clock, {summary['epochs']} epochs, "
        f"median {sorted(img_s)[len(img_s) // 2]:.1f} train images/s"
    )
    save(
        f"camvid_{args.tag or args.model}",
        {
            "budget_minutes": args.minutes,
            "train_wall_minutes": round(train_s / 60, 2),
            "epochs": summary["epochs"],
            "train_images_per_s_median": round(sorted(img_s)[len(img_s) // 2], 2),
            "best_val_mIoU": summary["best_val_mIoU"],
            "test_mIoU": metrics["mIoU"],
            "test_pixel_accuracy": metrics["pixel_accuracy"],
            "test_mean_class_accuracy": metrics["mean_class_accuracy"],
            "test_per_class_iou": {k: v["iou"] for k, v in metrics["per_class"].items()},
            "precision": summary["precision"],
            "tta": args.tta,
            "run_dir": str(run_dir),
            "config": cfg.model_dump(mode="json"),
            "per_epoch": epochs,
        },
    )


if __name__ == "__main__":
    main()
