"""Cost of an architecture: parameters, GFLOPs, CPU latency and peak memory at one size.

Each architecture is profiled in a fresh process (``python -m seglab.models.profile NAME``)
so that its peak resident memory is its own.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from seglab.inference.predictor import Predictor, resolve_precision
from seglab.models.registry import MODELS, build_model


def profile_model(
    name: str,
    encoder: str | None = None,
    size: tuple[int, int] = (360, 480),
    num_classes: int = 11,
    runs: int = 10,
    precision: str = "auto",
) -> dict:
    """Parameters, GFLOPs (multiply-adds count as 2) and median latency of one image."""
    torch.manual_seed(0)
    meta = {"classes": [str(i) for i in range(num_classes)], "in_channels": 3}
    model = build_model(name, num_classes, 3, [0.0] * 3, [1.0] * 3, encoder=encoder).eval()
    params = sum(p.numel() for p in model.parameters())
    x = torch.rand(1, 3, *size) * 255
    predictor = Predictor.for_model(model, meta, precision="fp32", channels_last=False)
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        predictor.logits(x)
    flops = fc.get_total_flops()
    model = model.to(memory_format=torch.channels_last)
    predictor = Predictor.for_model(model, meta, precision=precision, channels_last=True)
    times = []
    with torch.inference_mode():
        for i in range(runs + 3):
            t = time.perf_counter()
            predictor.logits(x)
            if i >= 3:
                times.append(time.perf_counter() - t)
    return {
        "model": name,
        "encoder": encoder,
        "params_m": round(params / 1e6, 2),
        "gflops": round(flops / 1e9, 1),
        "latency_ms": round(1000 * statistics.median(times), 1),
        "precision": resolve_precision(precision),
        "threads": torch.get_num_threads(),
        "size": list(size),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0),
    }


def profile_all(
    names: list[str] | None = None, size: tuple[int, int] = (360, 480), runs: int = 10
) -> list[dict]:
    """Profile each architecture (default encoder) in its own process."""
    rows = []
    for name in names or sorted(MODELS):
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "seglab.models.profile",
                name,
                str(size[0]),
                str(size[1]),
                str(runs),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            rows.append({"model": name, "error": out.stderr.strip().splitlines()[-1:]})
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


if __name__ == "__main__":
    name, h, w, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    print(json.dumps(profile_model(name, size=(h, w), runs=runs)))
