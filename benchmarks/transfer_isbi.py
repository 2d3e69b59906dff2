"""Transfer learning gain on ISBI 2012 with only 6 labelled slices (00-05).

    .venv/bin/python benchmarks/transfer_isbi.py [--pretrain-minutes 10] [--minutes 5]

1. trains a grey-input U-Net-ResNet18 on DSB2018 nuclei (semantic, its train split);
2. trains on ISBI slices 00-05 (a) from scratch and (b) with ``model.init_from`` the DSB
   model, the same budget each; reports pixel and adapted Rand error on slices 24-29.
Writes benchmarks/results/transfer_isbi.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _common import ROOT, SHARED, save
from isbi2012_unet import isbi_scores

from seglab.config import config_from_dict, load_config
from seglab.training.train import train


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pretrain-minutes", type=float, default=10.0)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--runs-dir", type=Path, default=ROOT / "benchmarks" / "work")
    args = ap.parse_args()
    for name in ("isbi2012", "dsb2018"):
        if not (SHARED / name).is_dir():
            sys.exit(f"{name} not found at {SHARED / name}")
    t0 = time.monotonic()
    dsb = train(
        config_from_dict(
            {
                "name": "dsb2018-grey-unet",
                "seed": 0,
                "data": {"format": "dsb2018", "root": str(SHARED / "dsb2018"), "in_channels": 1},
                "model": {"name": "unet", "encoder": "resnet18"},
                "loss": {"name": "ce+dice"},
                "augment": {
                    "scale": [0.8, 1.2],
                    "rotate": 90,
                    "crop": [256, 256],
                    "hflip": 0.5,
                    "vflip": 0.5,
                },
                "train": {
                    "epochs": 500,
                    "max_minutes": args.pretrain_minutes,
                    "batch_size": 8,
                    "lr": 0.002,
                    "scheduler": "cosine",
                },
                "inference": {"batch_size": 1},
            }
        ),
        args.runs_dir,
    )
    pretrain_min = (time.monotonic() - t0) / 60
    results = {}
    for label, extra in (("scratch", []), ("init_from_dsb2018", [f"model.init_from={dsb}"])):
        cfg = load_config(
            ROOT / "configs" / "isbi2012.yaml",
            [
                f"name=isbi6-{label}",
                "data.splits={train: 0-5}",
                f"train.max_minutes={args.minutes}",
                *extra,
            ],
        )
        run = train(cfg, args.runs_dir)
        s = isbi_scores(run)
        results[label] = {
            "pixel_error": s["pixel_error"],
            "adapted_rand_error": s["adapted_rand_error"],
            "mIoU": s["metrics"]["mIoU"],
            "run_dir": str(run),
        }
        print(
            f"{label:20s} pixel error {s['pixel_error']:.4f}  "
            f"adapted Rand error {s['adapted_rand_error']:.4f}"
        )
    save(
        "transfer_isbi",
        {
            "train_slices": "00-05",
            "eval_slices": "24-29",
            "budget_minutes": args.minutes,
            "pretrain": {
                "data": "dsb2018 train (grey)",
                "minutes": round(pretrain_min, 1),
                "run_dir": str(dsb),
            },
            **results,
        },
    )


if __name__ == "__main__":
    main()
