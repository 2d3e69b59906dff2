"""``seglab benchmark``: latency, throughput and peak memory of a model per backend x
precision x batch size. Each configuration runs in its own process (so its peak RSS is its
own), after ``warmup`` untimed calls, with the torch/OpenVINO/ORT default thread pools
(one thread per core). The network is timed without test-time augmentation (a run's
``inference.tta`` is not applied)."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from seglab.errors import SeglabError
from seglab.inference.backends import available
from seglab.inference.predictor import read_semantic_checkpoint

MEASURE_TIMEOUT = 900  # seconds per configuration, from the child's start


def open_predictor(source: Path, backend: str, precision: str, tmp: Path):
    from seglab.inference.predictor import Predictor

    if backend == "onnxruntime" and not (source / "seglab.json").is_file():
        from seglab.export import export

        onnx_dir = tmp / "onnx"
        if not onnx_dir.is_dir():
            export(source, "onnx", onnx_dir)
        source = onnx_dir
    return Predictor.open(source, backend=backend, precision=precision, tta=None)


def _measure(source, backend, precision, batch, size, warmup, runs, tmp, report) -> None:
    from seglab.inference.predictor import class_argmax

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
                class_argmax(predictor.logits(x))
                if i >= warmup:
                    times.append(time.perf_counter() - t)
        times.sort()
        p50 = statistics.median(times)
        p90 = times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))]
        report.put(
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
        report.put({"backend": backend, "precision": precision, "batch": batch, "error": str(err)})


def run_measurement(ctx, args: tuple, timeout: float = MEASURE_TIMEOUT) -> dict:
    """``_measure(*args)`` in a child process: its row, or a SeglabError when the child
    dies without one (killed by the OOM killer, a crash) or runs past ``timeout`` seconds."""
    q = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(*args, q))
    proc.start()
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                return q.get(timeout=1)
            except queue.Empty:
                pass
            if not proc.is_alive():
                try:  # a report sent just before the child ended
                    return q.get(timeout=1)
                except queue.Empty:
                    killed = " (killed: out of memory?)" if proc.exitcode == -9 else ""
                    raise SeglabError(
                        f"the measurement process died with exit code {proc.exitcode}{killed}"
                    ) from None
            if time.monotonic() > deadline:
                raise SeglabError(
                    f"the measurement process timed out after {timeout:.0f} s and was killed"
                )
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()


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
    if not (Path(source) / "seglab.json").is_file():  # a bad path or an instance run: now
        read_semantic_checkpoint(source)
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
                    args = (str(source), backend, precision, batch, size, warmup, runs, tmp)
                    try:
                        row = run_measurement(ctx, args)
                    except SeglabError as err:  # in the table; the other rows go on
                        row = {"error": str(err)}
                    rows.append({"backend": backend, "precision": precision, "batch": batch} | row)
    return {
        "source": str(source),
        "size": list(size),
        "warmup": warmup,
        "runs": runs,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "rows": rows,
    }
