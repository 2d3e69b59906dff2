"""Transfer learning gain on ISBI 2012 with 6 labelled training slices.

    .venv/bin/python benchmarks/transfer_isbi.py [--source benchmarks/work/dsb2018-unet]
        [--steps 300] [--fraction 0.25]

(a) U-Net-ResNet18 from scratch and (b) the same network initialised from a seglab model
trained on another data set (default: the dsb2018 nuclei U-Net of classic_vs_deep.py,
trained here with configs/dsb2018.yaml for --source-minutes if missing; RGB -> grey by
summing the stem's weights, the rest loaded by name) are trained on the same 6 of the 24
training slices (data.train_fraction 0.25, nested subset from the seed) for the same number
of optimizer steps (a budget other load on the machine cannot bend), then scored on slices
24-29: pixel error and adapted Rand error. Writes benchmarks/results/transfer_isbi.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _common import ROOT, SHARED, save
from isbi2012_unet import isbi_scores

from seglab.config import load_config
from seglab.data.dataset import DatasetDefinition, SegDataset
from seglab.training.train import train


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", type=Path, default=ROOT / "benchmarks" / "work" / "dsb2018-unet")
    ap.add_argument("--source-minutes", type=float, default=10.0)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--fraction", type=float, default=0.25)
    ap.add_argument("--runs-dir", type=Path, default=ROOT / "benchmarks" / "work" / "transfer")
    args = ap.parse_args()
    for name in ("isbi2012", "dsb2018"):
        if not (SHARED / name).is_dir():
            sys.exit(f"{name} not found at {SHARED / name}; see ../shared/datasets/README.md")
    if not (args.source / "checkpoints" / "best.ckpt").is_file():
        cfg = load_config(
            ROOT / "configs" / "dsb2018.yaml", [f"train.max_minutes={args.source_minutes}"]
        )
        cfg.name = args.source.name
        args.source = train(cfg, args.source.parent)
    rows = {}
    for variant in ("scratch", "init_from"):
        overrides = [
            f"data.train_fraction={args.fraction}",
            f"train.max_steps={args.steps}",
            "train.max_minutes=null",
            "train.val_every=25",
            "inference.scale=1",  # the setting transfer_isbi.json was measured with
            f"name=isbi2012-{round(100 * args.fraction)}pct-{variant}",
        ]
        if variant == "init_from":
            overrides.append(f"model.init_from={args.source}")
        cfg = load_config(ROOT / "configs" / "isbi2012.yaml", overrides)
        n = len(SegDataset(DatasetDefinition.from_config(cfg.data), "train", cache=False))
        t = time.monotonic()
        run = train(cfg, args.runs_dir)
        minutes = (time.monotonic() - t) / 60
        scores = isbi_scores(run)
        rows[variant] = {
            "run_dir": str(run),
            "train_slices": n,
            "steps": args.steps,
            "train_minutes": round(minutes, 1),
            "pixel_error": scores["pixel_error"],
            "adapted_rand_error": scores["adapted_rand_error"],
            "mIoU": scores["metrics"]["mIoU"],
        }
        print(
            f"{variant:10s} {n} slices, {args.steps} steps ({minutes:.1f} min): pixel error "
            f"{scores['pixel_error']:.4f}, adapted Rand error {scores['adapted_rand_error']:.4f}"
        )
    save(
        "transfer_isbi",
        {"source": str(args.source), "fraction": args.fraction, **rows},
    )


if __name__ == "__main__":
    main()
