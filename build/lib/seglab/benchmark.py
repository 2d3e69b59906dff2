"""``seglab benchmark``: latency, throughput and peak memory of a model per backend x
precision x batch size. Each configuration runs in its own process (so its peak RSS is its
own), after ``warmup`` untimed calls, with the torch/OpenVINO/ORT default thread pools
(one thread per core)."""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from seglab.errors import SeglabError
from seglab.inference.backends import available


def open_predictor(source: Path, backend: str, precision: str, tmp: Path):
    from seglab.inference.predictor import Predictor

    if backend == "onnxruntime" and not (source / "seglab.json").is_file():
        from seglab.export import export

        onnx_dir = tmp / "onnx"
        if not onnx_dir.is_dir():
            export(source, "onnx", onnx_dir)
        source = onnx_dir
    return Predictor.open(source, backend=backend, precision=precision)


def _measure(source, backend, precision, batch, size, warmup, runs, tmp, queue) -> None:
    try:
        torch.manual_seed(0)
        predictor = open_predictor(Path(source), backend, precision, Path(tmp))
        c = predictor.meta["in_channels"]
        x = torch.rand(batch, c, *size) * 255
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        times = []
        with torch.inference_mode():
            for i in range(warmup + runs):
                t = time.perf_counter()
                predictor.logits(x).argmax(1)
                if i >= warmup:
                    times.append(time.perf_counter() - t)
        times.sort()
        p50 = statistics.median(times)
        p90 = times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))]
        queue.put(
            {
                "backend": backend,
                "precision": precision,
                "batch": batch,
                "latency_p50_ms": round(1000 * p50, 2),
                "latency_p90_ms": round(1000 * p90, 2),
                "images_per_s": round(batch / p50, 2),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "rss_before_mb": round(rss0 / 1024),
            }
        )
    except Exception as err:  # noqa: BLE001 - reported in the table, the others go on
        queue.put({"backend": backend, "precision": precision, "batch": batch, "error": str(err)})


def benchmark(
    source: Path,
    backends: list[str],
    precisions: list[str],
    batches: list[int],
    size: tuple[int, int] = (360, 480),
    warmup: int = 3,
    runs: int = 20,
) -> dict:
    for b in backends:
        if b not in ("torch", "onnxruntime", "openvino"):
            raise SeglabError(f"unknown backend {b!r}; choose torch, onnxruntime, openvino")
    for p in precisions:
        if p not in ("fp32", "bf16"):
            raise SeglabError(f"unknown precision {p!r}; choose fp32 or bf16")
    rows = []
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            if not available(backend):
                rows.append({"backend": backend, "error": f"not installed (pip install {backend})"})
                continue
            for precision in precisions:
                if backend == "onnxruntime" and precision != "fp32":
                    continue  # ORT's CPU provider has no bf16 kernels
                for batch in batches:
                    q = ctx.Queue()
                    args = (str(source), backend, precision, batch, size, warmup, runs, tmp, q)
                    proc = ctx.Process(target=_measure, args=args)
                    proc.start()
                    try:
                        row = q.get(timeout=900)
                    except Exception:  # noqa: BLE001 - the child died without a report
                        row = {
                            "backend": backend,
                            "precision": precision,
                            "batch": batch,
                            "error": f"process ended with code {proc.exitcode}",
                        }
                    proc.join()
                    rows.append(row)
    return {
        "source": str(source),
        "size": list(size),
        "warmup": warmup,
        "runs": runs,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "rows": rows,
    }
