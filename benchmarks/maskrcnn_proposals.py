"""Mask R-CNN inference time against ``instance.proposals`` (RPN proposals per image).

    .venv/bin/python benchmarks/maskrcnn_proposals.py [--images 6] [--detections 50] [--tag CPU]

The architecture of configs/dsb2018-maskrcnn.yaml (MobileNetV3-Large-FPN, images x2),
randomly initialised, on the first ``--images`` DSB 2018 validation images, through
``detect`` (the path ``evaluate`` and ``predict`` take). A random network scores every
proposal alike, so it would always return ``detections_per_image`` objects (the config's
300, each with a mask to paste); ``--detections`` sets that cap to about the data's
objects per image instead (DSB 2018: 19,110 nuclei in 434 images, 44 per image).

Times only: a random network's detections say nothing about accuracy; what fewer proposals
cost in AP has to be measured on a trained run (``seglab evaluate RUN --proposals N``). The
proposal counts are timed in interleaved rounds; medians of the per-image times.
Writes benchmarks/results/maskrcnn_proposals[_TAG].json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from _common import ROOT, SHARED, save

from seglab.config import load_config
from seglab.data.dataset import DatasetDefinition
from seglab.instance.data import InstanceDataset
from seglab.instance.maskrcnn import detect
from seglab.instance.run import instance_meta
from seglab.instance.task import InstanceTask

COUNTS = (1000, 300, 100)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--detections", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    if not (SHARED / "dsb2018").is_dir():
        sys.exit(f"DSB 2018 not found at {SHARED / 'dsb2018'}")
    cfg = load_config(ROOT / "configs" / "dsb2018-maskrcnn.yaml")
    definition = DatasetDefinition.from_config(cfg.data)
    ds = InstanceDataset(definition, "val")
    images = [torch.from_numpy(s.image).permute(2, 0, 1) for s in ds.samples[: args.images]]
    meta = instance_meta(definition)
    models = {}
    for n in COUNTS:
        torch.manual_seed(0)
        raw = cfg.model_dump(mode="json")
        raw["instance"]["proposals"] = n
        raw["instance"]["detections_per_image"] = args.detections
        models[n] = InstanceTask(raw, meta, pretrained=False).eval().model
    times: dict[int, list[float]] = {n: [] for n in COUNTS}
    for n in COUNTS:  # warm-up
        detect(models[n], images[0])
    for r in range(args.rounds):
        for n in COUNTS:
            for im in images:
                t = time.perf_counter()
                detect(models[n], im)
                times[n].append(time.perf_counter() - t)
            print(f"round {r + 1}: proposals {n:5d}: {1000 * statistics.median(times[n]):.0f} ms")
    ms = {n: 1000 * statistics.median(times[n]) for n in COUNTS}
    for n in COUNTS:
        print(f"proposals {n:5d}: {ms[n]:7.0f} ms/image  x{ms[COUNTS[0]] / ms[n]:.2f}")
    save(
        "maskrcnn_proposals" + (f"_{args.tag}" if args.tag else ""),
        {
            "config": "configs/dsb2018-maskrcnn.yaml (random init)",
            "images": args.images,
            "detections_per_image": args.detections,
            "image_sizes": sorted({tuple(im.shape[1:]) for im in images}),
            "rounds": args.rounds,
            "threads": torch.get_num_threads(),
            "ms_per_image_median": {str(n): round(ms[n], 1) for n in COUNTS},
            "speedup_vs_1000": {str(n): round(ms[COUNTS[0]] / ms[n], 2) for n in COUNTS},
        },
    )


if __name__ == "__main__":
    main()
