"""Classical methods against the U-Net, scored by the same evaluation code.

    .venv/bin/python benchmarks/classic_vs_deep.py [--methods otsu,watershed,...]
        [--isbi-run benchmarks/work/isbi2012-unet] [--dsb-run benchmarks/work/dsb2018-unet]

ISBI 2012 (train slices 00-23 for tuning, validation slices 24-29): pixel error and adapted
Rand error (as benchmarks/isbi2012_unet.py). dsb2018 (train split for tuning, val split):
nucleus IoU and Dice. Each classical method is tuned by ``seglab classic`` (grid search on
12 evenly spaced training images), writes masks, and is scored by ``evaluate_predictions``;
the U-Net rows evaluate the benchmark runs (trained by isbi2012_unet.py and, if missing,
here with configs/dsb2018.yaml for --dsb-steps optimizer steps).
Writes benchmarks/results/classic_vs_deep.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from _common import ROOT, SHARED, save
from isbi2012_unet import isbi_scores
from skimage.measure import label
from skimage.metrics import adapted_rand_error

from seglab.classic import METHODS, run_classic
from seglab.config import load_config
from seglab.data.dataset import DatasetDefinition, SegDataset
from seglab.data.io import read_mask
from seglab.evaluation.evaluate import evaluate, evaluate_predictions
from seglab.training.train import train


def rand_error(definition: DatasetDefinition, folder: Path) -> float:
    ds = SegDataset(definition, "val", cache=False)
    errs = []
    for i, item in enumerate(ds.pairs):
        gt = ds.load(i)[1]
        pred = read_mask(folder / f"{Path(item.image).stem}_mask.png")
        are, _, _ = adapted_rand_error(
            label(gt == 1, connectivity=1), label(pred == 1, connectivity=1)
        )
        errs.append(float(are))
    return float(np.mean(errs))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--isbi-run", type=Path, default=ROOT / "benchmarks" / "work" / "isbi2012-unet")
    ap.add_argument("--dsb-run", type=Path, default=ROOT / "benchmarks" / "work" / "dsb2018-unet")
    ap.add_argument("--dsb-steps", type=int, default=600, help="about 10 min on 2 idle cores")
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "work" / "classic")
    args = ap.parse_args()
    for name in ("isbi2012", "dsb2018"):
        if not (SHARED / name).is_dir():
            sys.exit(f"{name} not found at {SHARED / name}; see ../shared/datasets/README.md")
    isbi = DatasetDefinition.from_config(load_config(ROOT / "configs" / "isbi2012.yaml").data)
    dsb_cfg = load_config(
        ROOT / "configs" / "dsb2018.yaml",
        [f"train.max_steps={args.dsb_steps}", "train.max_minutes=null"],
    )
    dsb = DatasetDefinition.from_config(dsb_cfg.data)

    rows = []
    for method in args.methods.split(","):
        row = {"method": method, "summary": METHODS[method].summary}
        for key, definition in (("isbi2012", isbi), ("dsb2018", dsb)):
            out = args.work / key / method
            t0 = time.monotonic()
            written, search = run_classic(method, definition, "val", out)
            seconds = time.monotonic() - t0
            metrics, _ = evaluate_predictions(definition, "val", out, out / "eval")
            row[key] = {"params": search["best"]["params"], "seconds_total": round(seconds, 1)}
            if key == "isbi2012":
                row[key]["pixel_error"] = 1 - metrics["pixel_accuracy"]
                row[key]["adapted_rand_error"] = rand_error(definition, out)
            else:
                row[key]["nucleus_iou"] = metrics["per_class"]["nucleus"]["iou"]
                row[key]["nucleus_dice"] = metrics["per_class"]["nucleus"]["dice"]
        rows.append(row)
        print(row)

    # the deep model: the U-Net runs of the core benchmarks
    scores = isbi_scores(args.isbi_run)
    deep = {"method": "U-Net-ResNet18 (seglab)", "summary": "deep learning, trained from scratch"}
    deep["isbi2012"] = {
        "pixel_error": scores["pixel_error"],
        "adapted_rand_error": scores["adapted_rand_error"],
        "run": str(args.isbi_run),
    }
    run = args.dsb_run
    if not (run / "checkpoints" / "best.ckpt").is_file():
        run = train(dsb_cfg, run.parent)
    metrics, _ = evaluate(run, "val")
    deep["dsb2018"] = {
        "nucleus_iou": metrics["per_class"]["nucleus"]["iou"],
        "nucleus_dice": metrics["per_class"]["nucleus"]["dice"],
        "run": str(run),
    }
    rows.append(deep)

    print(
        "\n| method | ISBI pixel error | ISBI adapted Rand error "
        "| DSB nucleus IoU | DSB nucleus Dice |"
    )
    print("|---|---|---|---|---|")
    for r in rows:
        i, d = r["isbi2012"], r["dsb2018"]
        print(
            f"| {r['method']} | {i['pixel_error']:.4f} | {i['adapted_rand_error']:.4f} "
            f"| {100 * d['nucleus_iou']:.1f}% | {100 * d['nucleus_dice']:.1f}% |"
        )
    save("classic_vs_deep", {"rows": rows})


if __name__ == "__main__":
    main()
