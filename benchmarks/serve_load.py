"""Load test of ``seglab serve`` on loopback: requests/s and p50/p99 latency at 1, 4 and 16
concurrent clients for the CamVid U-Net-ResNet18 run, then one level above saturation with a
small queue, where the server must answer 503 + Retry-After (not crash, not time out).

    .venv/bin/python benchmarks/serve_load.py --run benchmarks/work/camvid-unet-run1

Each level starts ``seglab serve`` in a subprocess on 127.0.0.1 (a free port), sends a few
untimed warm-up requests, then ``--requests`` (scaled by the client count) ``POST /v1/segment``
requests of CamVid test images (360x480 PNG, index-PNG answers) from N concurrent clients in
one asyncio process; each client sends its next request when the previous one is answered
(after a 503 it first waits Retry-After seconds, at most 1 s, as a polite client does).
Bounded: a fixed number of requests per level, a per-request timeout and a per-level time
limit. Latency is measured at the client, per successful request. Also takes a screenshot of
the web page with the model (benchmarks/results/serve_page.png) when chromium is installed.
Writes benchmarks/results/serve_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx
from _common import RESULTS, ROOT, SHARED, save

HOST = "127.0.0.1"  # loopback only


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Server:
    """``seglab serve RUN`` on loopback, stopped on exit."""

    def __init__(self, run: Path, max_queue: int, max_batch: int, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        cmd = [sys.executable, "-m", "seglab", "serve", str(run), "--host", HOST]
        cmd += ["--port", str(self.port), "--max-queue", str(max_queue)]
        cmd += ["--max-batch", str(max_batch)]
        self.log = log
        self.out = open(log, "wb")  # noqa: SIM115 - closed in __exit__
        env = dict(os.environ, PYTHONWARNINGS="ignore")
        self.proc = subprocess.Popen(cmd, stdout=self.out, stderr=subprocess.STDOUT, env=env)

    def __enter__(self) -> Server:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"seglab serve exited: {self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2):
                    return self
            except OSError:
                time.sleep(0.5)
        raise SystemExit("seglab serve did not start within 300 s")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.out.close()

    def alive(self) -> bool:
        return self.proc.poll() is None


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q / 100 * len(values) + 0.5) - 1))]


async def load(
    url: str,
    images: list[bytes],
    clients: int,
    total: int,
    limit_s: float,
    backoff_cap: float = 1.0,
) -> dict:
    """``total`` requests from ``clients`` concurrent clients; latencies of the answers.
    A client answered 503 waits Retry-After seconds (at most ``backoff_cap``) and goes on
    with its next request; every attempt counts as one of the ``total``."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    retry_after: list[int] = []
    next_index = iter(range(total))
    deadline = time.perf_counter() + limit_s
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as c:

        async def client() -> None:
            for i in next_index:
                if time.perf_counter() > deadline:
                    statuses["not_sent_time_limit"] = statuses.get("not_sent_time_limit", 0) + 1
                    continue
                files = {"file": ("image.png", images[i % len(images)], "image/png")}
                start = time.perf_counter()
                try:
                    r = await c.post("/v1/segment", files=files)
                    key = str(r.status_code)
                except httpx.HTTPError as err:
                    key = type(err).__name__
                    r = None
                statuses[key] = statuses.get(key, 0) + 1
                if r is not None and r.status_code == 200:
                    latencies.append(time.perf_counter() - start)
                elif r is not None and r.status_code == 503:
                    wait = int(r.headers.get("retry-after", "0"))
                    retry_after.append(wait)
                    await asyncio.sleep(min(wait, backoff_cap))  # as a polite client does

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        seconds = time.perf_counter() - start
    ok = statuses.get("200", 0)
    return {
        "clients": clients,
        "requests": total,
        "ok": ok,
        "rejected_503": statuses.get("503", 0),
        "failed": total - ok - statuses.get("503", 0),
        "statuses": statuses,
        "seconds": round(seconds, 2),
        "requests_per_s": round(ok / seconds, 2),
        "p50_ms": round(1000 * percentile(latencies, 50), 1) if latencies else None,
        "p99_ms": round(1000 * percentile(latencies, 99), 1) if latencies else None,
        "mean_ms": round(1000 * statistics.fmean(latencies), 1) if latencies else None,
        "retry_after_s": sorted(set(retry_after)),
    }


def batch_stats(url: str) -> dict:
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    values = {}
    for line in text.splitlines():
        for name in ("seglab_inference_batch_size_sum", "seglab_inference_batch_size_count"):
            if line.startswith(name + " "):
                values[name] = float(line.split()[1])
    count = values.get("seglab_inference_batch_size_count", 0)
    images = values.get("seglab_inference_batch_size_sum", 0)
    return {"forward_passes": int(count), "images": int(images)}


def screenshot(url: str, image: Path, out: Path) -> bool:
    chromium = shutil.which("chromium")
    if chromium is None:
        print("chromium not found: no screenshot")
        return False
    from playwright.sync_api import sync_playwright

    args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=args)
        page = browser.new_page(viewport={"width": 1280, "height": 820})
        page.goto(url + "/")
        page.wait_for_selector("#legend li")
        page.set_input_files("#file", str(image))
        page.wait_for_selector('#overlay[data-ready="1"]', timeout=120_000)
        page.screenshot(path=str(out), full_page=True)
        browser.close()
    print(f"screenshot written to {out}")
    return True


def run_level(args, name: str, clients: int, total: int, max_queue: int, max_batch: int, images):
    log = Path(args.logs) / f"serve_{name}.log"
    with Server(args.run, max_queue, max_batch, log) as server:
        asyncio.run(load(server.url, images, 1, 3, 120))  # warm-up, not counted
        before = batch_stats(server.url)
        result = asyncio.run(load(server.url, images, clients, total, args.time_limit))
        after = batch_stats(server.url)
        result.update(
            level=name,
            max_queue=max_queue,
            max_batch=max_batch,
            server_alive_after=server.alive(),
            forward_passes=after["forward_passes"] - before["forward_passes"],
            images_inferred=after["images"] - before["images"],
        )
    print(
        f"{name:>14}: {clients:>2} clients, queue {max_queue:>2}, batch {max_batch}: "
        f"{result['requests_per_s']:6.2f} req/s  p50 {result['p50_ms']} ms  "
        f"p99 {result['p99_ms']} ms  ok {result['ok']}  503 {result['rejected_503']}  "
        f"failed {result['failed']}",
        flush=True,
    )
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, default=ROOT / "benchmarks/work/camvid-unet-run1")
    ap.add_argument("--requests", type=int, default=40, help="requests per level = this x 2^k")
    ap.add_argument("--time-limit", type=float, default=120, help="seconds per level at most")
    ap.add_argument("--logs", type=Path, default=Path("/tmp"))
    ap.add_argument("--no-screenshot", action="store_true")
    args = ap.parse_args()
    if not args.run.is_dir():
        raise SystemExit(f"run {args.run} not found; train it (benchmarks/camvid_unet.py)")
    files = sorted((SHARED / "camvid" / "test").glob("*.png"))[:16]
    if not files:
        raise SystemExit(f"CamVid test images not found under {SHARED / 'camvid'}")
    images = [f.read_bytes() for f in files]
    n = args.requests
    levels = [
        run_level(args, "c1", 1, n, 16, 1, images),
        run_level(args, "c4", 4, 2 * n, 16, 1, images),
        run_level(args, "c16", 16, 4 * n, 16, 1, images),
        run_level(args, "c16-batch4", 16, 4 * n, 16, 4, images),
        run_level(args, "overload-c32", 32, 4 * n, 4, 1, images),
    ]
    shot = False
    if not args.no_screenshot:
        with Server(args.run, 16, 1, Path(args.logs) / "serve_shot.log") as server:
            shot = screenshot(server.url, files[0], RESULTS / "serve_page.png")
    save(
        "serve_load",
        {
            "run": str(args.run),
            "image": "CamVid test 360x480 PNG (16 images, cycled)",
            "host": HOST,
            "levels": levels,
            "screenshot": "benchmarks/results/serve_page.png" if shot else None,
        },
    )


if __name__ == "__main__":
    main()
