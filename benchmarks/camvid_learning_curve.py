"""Learning curve on CamVid: test mIoU against the number of labelled training images.

    .venv/bin/python benchmarks/camvid_learning_curve.py [--fractions 0.1,0.25,0.5,1.0]
        [--steps 500]

``seglab learning-curve`` with configs/camvid.yaml: nested random shares of the 367
training images (data.train_fraction, seed 0), each trained for the same number of
optimizer steps (``train.max_steps``; a wall-clock budget would be bent by other load on
the machine), validated about 8 times per share, the best checkpoint scored on the 233
test images at 360x480. Writes benchmarks/results/camvid_learning_curve.json and .png.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from _common import RESULTS, ROOT, SHARED, save

from seglab.config import load_config
from seglab.evaluation.compare import learning_curve


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fractions", default="0.1,0.25,0.5,1.0")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--runs-dir", type=Path, default=ROOT / "benchmarks" / "work" / "lc")
    args = ap.parse_args()
    if not (SHARED / "camvid").is_dir():
        sys.exit(f"CamVid not found at {SHARED / 'camvid'}; see ../shared/datasets/README.md")
    cfg = load_config(
        ROOT / "configs" / "camvid.yaml",
        [f"train.max_steps={args.steps}", "train.max_minutes=null"],
    )
    out = args.runs_dir / "curve"
    rows = learning_curve(
        cfg, [float(f) for f in args.fractions.split(",")], args.runs_dir, "test", out
    )
    for r in rows:
        print(f"{r['train_images']:4d} images: test mIoU {100 * r['mIoU']:.2f}%")
    RESULTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(out / "learning_curve.png", RESULTS / "camvid_learning_curve.png")
    save("camvid_learning_curve", {"steps": args.steps, "rows": rows})


if __name__ == "__main__":
    main()
