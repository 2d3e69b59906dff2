"""Cost of every architecture in the registry with its default encoder, at 360x480.

    .venv/bin/python benchmarks/zoo_cost.py [--size 360x480] [--runs 10]

``seglab models --profile`` as a script: parameters, GFLOPs (torch's FlopCounterMode,
multiply-add = 2), median CPU latency of one image through the torch backend under bf16
autocast + channels_last (3 warm-up calls), peak resident memory of a fresh process per
architecture. Run it on an otherwise idle machine. Writes benchmarks/results/zoo_cost.json.
"""

from __future__ import annotations

import argparse

from _common import save

from seglab.models.profile import profile_all


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="360x480")
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    rows = profile_all(size=(h, w), runs=args.runs)
    print("| model | encoder | params (M) | GFLOPs | latency (ms) | peak RSS (MB) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | failed: {r['error']} |")
            continue
        print(
            f"| {r['model']} | {r.get('encoder') or 'default'} | {r['params_m']} | {r['gflops']} "
            f"| {r['latency_ms']} | {r['peak_rss_mb']:.0f} |"
        )
    save("zoo_cost", {"size": [h, w], "runs": args.runs, "rows": rows})


if __name__ == "__main__":
    main()
