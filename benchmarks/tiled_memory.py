"""Peak memory and run time of tiled inference on a 10000 x 10000 image.

    .venv/bin/python benchmarks/tiled_memory.py [--run benchmarks/work/camvid-unet]
        [--size 10000] [--backend auto] [--repeats 3]

The image is a mosaic of CamVid test photos resized to SIZE x SIZE (street content, so the
model does real work). Prediction runs in a fresh process that reports its peak resident
memory (ru_maxrss) after loading the model and image, and after predicting (the time is
the median of ``--repeats`` predictions); the whole
float32 logit volume, which tiling avoids, is printed for comparison.
Writes benchmarks/results/tiled_memory.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from _common import ROOT, SHARED, save


def child(run: str, size: int, backend: str, repeats: int) -> None:
    from seglab.inference.predictor import Predictor

    photos = sorted((SHARED / "camvid" / "test").glob("*.png"))[:16]
    tiles = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in photos]
    mosaic = np.concatenate([np.concatenate(tiles[i : i + 4], 1) for i in range(0, 16, 4)], 0)
    image = cv2.resize(mosaic, (size, size), interpolation=cv2.INTER_LINEAR)
    del mosaic, tiles
    predictor = Predictor.open(run, backend=backend)
    predictor.predict(image[:360, :480])  # warm-up: model compiled, weights resident
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        mask = predictor.predict(image)
        times.append(time.perf_counter() - t)
    seconds = statistics.median(times)
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    k = predictor.num_classes
    net = round(size * predictor.scale)
    print(
        json.dumps(
            {
                "size": [size, size],
                "network_size": [net, net],
                "scale": predictor.scale,
                "tiled": size * size * max(predictor.scale, 1) ** 2 > predictor.max_pixels,
                "tile": predictor.tile,
                "overlap": predictor.overlap,
                "backend": predictor.backend.name,
                "seconds": round(seconds, 1),
                "seconds_each": [round(x, 1) for x in times],
                "peak_rss_mb_before_predict": round(rss_before),
                "peak_rss_mb": round(rss_after),
                "image_mb": round(image.nbytes / 2**20),
                "mask_mb": round(mask.nbytes / 2**20),
                "mask_shape": list(mask.shape),
                "classes_predicted": int(len(np.unique(mask))),
                "full_logit_volume_fp32_mb_at_network_scale": round(4 * k * net * net / 2**20),
                "full_logit_volume_fp32_mb_at_input_size": round(4 * k * size * size / 2**20),
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, default=ROOT / "benchmarks" / "work" / "camvid-unet")
    ap.add_argument("--size", type=int, default=10000)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not (SHARED / "camvid").is_dir():
        sys.exit(f"CamVid not found at {SHARED / 'camvid'}; see ../shared/datasets/README.md")
    if args.child:
        child(str(args.run), args.size, args.backend, args.repeats)
        return
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--run",
        str(args.run.resolve()),  # the child runs in benchmarks/
        "--size",
        str(args.size),
        "--backend",
        args.backend,
        "--repeats",
        str(args.repeats),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).parent)
    if proc.returncode != 0:
        sys.exit(proc.stderr[-2000:])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key, value in result.items():
        print(f"  {key}: {value}")
    save("tiled_memory", {"run": str(args.run), **result})


if __name__ == "__main__":
    main()
