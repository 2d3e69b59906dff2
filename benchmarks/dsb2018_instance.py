"""DSB 2018 nuclei instances: train on the train split (347 images) for at most
``--minutes``, evaluate on val (87 images).

    .venv/bin/python benchmarks/dsb2018_instance.py --method maskrcnn|boundary [--minutes 60]

Configs: configs/dsb2018-maskrcnn.yaml and configs/dsb2018-boundary.yaml. Validation runs
every ``train.val_every`` epochs during training. When the time budget ends it, the last
checkpoint is scored with its thresholds re-tuned on val (as every validation does): these
are the reported figures; the best-validated checkpoint's are stored beside them.
Reported: DSB2018 score (mean over IoU
thresholds 0.5:0.05:0.95 of TP / (TP + FP + FN), averaged over images), COCO mask AP / AP50
/ AP75 (pycocotools; + box AP for Mask R-CNN) and the mean absolute count error per image.
Writes benchmarks/results/dsb2018_<method>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _common import ROOT, SHARED, save

from seglab.config import load_config
from seglab.instance.run import evaluate_instance
from seglab.training.train import train

KEYS = ("dsb_score", "mask_AP", "mask_AP50", "mask_AP75", "box_AP", "mean_abs_count_error")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", choices=["maskrcnn", "boundary"], required=True)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--runs-dir", default=str(ROOT / "benchmarks" / "work"))
    ap.add_argument("--set", action="append", default=[], help="config override key=value")
    ap.add_argument("--evaluate-only", type=Path, help="score this earlier run instead")
    args = ap.parse_args()
    if not (SHARED / "dsb2018").is_dir():
        sys.exit(f"dsb2018 not found at {SHARED / 'dsb2018'}")
    config = ROOT / "configs" / f"dsb2018-{args.method}.yaml"
    cfg = load_config(config, [f"train.max_minutes={args.minutes}", *args.set])
    if args.evaluate_only:
        run_dir = args.evaluate_only
    else:
        run_dir = train(cfg, Path(args.runs_dir))
    summary = json.loads((run_dir / "summary.json").read_text())
    t0 = time.monotonic()
    last, _ = evaluate_instance(run_dir / "checkpoints" / "last.ckpt", "val", tune=True)
    eval_s = time.monotonic() - t0
    best = None
    if (run_dir / "checkpoints" / "best.ckpt").is_file():
        best, _ = evaluate_instance(run_dir / "checkpoints" / "best.ckpt", "val")
    chosen = last
    print(
        f"dsb2018 val ({chosen['images']} images), {args.method}: "
        f"DSB2018 score {chosen['dsb_score']:.4f}  mask AP {chosen['mask_AP']:.4f}  "
        f"AP50 {chosen['mask_AP50']:.4f}  mean |count error| "
        f"{chosen['mean_abs_count_error']:.2f}  (trained {summary['train_seconds'] / 60:.1f} "
        f"min, {summary['epochs']} epochs)"
    )
    save(
        f"dsb2018_{args.method}",
        {
            "method": args.method,
            "images": chosen["images"],
            **{k: chosen.get(k) for k in KEYS},
            "mean_objects": chosen["mean_objects"],
            "mean_predicted": chosen["mean_predicted"],
            "thresholds": chosen["thresholds"],
            "checkpoint": chosen["checkpoint"],
            "last_checkpoint_retuned": {k: last.get(k) for k in KEYS},
            "best_checkpoint": {k: best.get(k) for k in KEYS} if best else None,
            "eval_seconds": round(eval_s, 1),
            "train_minutes": round(summary["train_seconds"] / 60, 2),
            "epochs": summary["epochs"],
            "annotation_problems": summary["annotation_problems"],
            "run_dir": str(run_dir),
            "config": cfg.model_dump(mode="json"),
        },
    )


if __name__ == "__main__":
    main()
