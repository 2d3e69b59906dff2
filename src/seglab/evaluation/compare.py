"""``seglab compare`` (a table of runs and an mIoU-vs-latency plot) and
``seglab learning-curve`` (mIoU against the number of labelled training images)."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import logging
import statistics
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from seglab.errors import SeglabError  # noqa: E402
from seglab.inference.predictor import Predictor, read_checkpoint, resolve_checkpoint  # noqa: E402
from seglab.runs import write_atomic, write_json  # noqa: E402

log = logging.getLogger("seglab")


def latest_eval(run: Path) -> dict | None:
    """The newest ``eval/<split>*/metrics.json`` of a run, preferring the test split."""
    found = sorted(run.glob("eval/*/metrics.json"), key=lambda p: p.stat().st_mtime)
    for split in ("test", None):
        for f in reversed(found):
            m = json.loads(f.read_text())
            if split is None or m.get("split") == split:
                return m
    return None


def measure_latency(run: Path, size: tuple[int, int], backend: str, runs: int = 10) -> float:
    """Median ms per image through the default predict path (after 2 warm-up calls)."""
    predictor = Predictor.open(run, backend=backend)
    image = np.random.default_rng(0).integers(
        0, 255, (*size, predictor.meta["in_channels"]), np.uint8
    )
    times = []
    for i in range(runs + 2):
        t = time.perf_counter()
        predictor.predict(image)
        if i >= 2:
            times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def describe_run(run: Path, size: tuple[int, int] | None, backend: str) -> dict:
    ckpt_path = resolve_checkpoint(run)
    ckpt = read_checkpoint(ckpt_path)
    config = ckpt["hyper_parameters"]["config"]
    params = sum(
        v.numel()
        for k, v in ckpt["state_dict"].items()
        if k.startswith("model.") and v.is_floating_point() and "running_" not in k
    )
    summary = (
        json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    )
    epochs = (
        json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() else []
    )
    rates = [e["images_per_s"] for e in epochs if e.get("images_per_s")]
    ev = latest_eval(run)
    best_val = summary.get("best_val_mIoU")
    # where mIoU comes from: the latest evaluation (test preferred), else training
    source = f"{ev.get('split')} evaluation" if ev else None
    if ev is None and best_val is not None:
        source = "best validation in training"
    row = {
        "run": run.name,
        "path": str(run),
        "architecture": config["model"]["name"],
        "encoder": config["model"]["encoder"] or "-",
        "params_m": round(params / 1e6, 2),
        "train_minutes": round(summary.get("train_seconds", 0) / 60, 1) if summary else None,
        "epochs": summary.get("epochs"),
        "train_images_per_s": round(statistics.median(rates), 1) if rates else None,
        "best_val_mIoU": best_val,
        "eval_split": ev.get("split") if ev else None,
        "mIoU": ev["mIoU"] if ev else best_val,
        "mIoU_source": source,
        "classes": list(ckpt["hyper_parameters"]["meta"]["classes"]),
        "per_class_iou": {c: m["iou"] for c, m in ev["per_class"].items()} if ev else {},
    }
    if size is not None:
        row["latency_ms"] = round(measure_latency(run, size, backend), 1)
    return row


def compare(
    runs: list[Path], out: Path, size: tuple[int, int] | None = (360, 480), backend: str = "auto"
) -> tuple[list[dict], Path]:
    """Describe every run; write compare.{md,csv,html,json} and the mIoU-latency plot."""
    if not runs:
        raise SeglabError("give at least one run directory to compare")
    rows = [describe_run(Path(r), size, backend) for r in runs]
    if len({tuple(r["classes"]) for r in rows}) > 1:
        log.warning(
            "the runs have different classes, so their mIoU are not comparable: %s",
            "; ".join(f"{r['run']}: {', '.join(r['classes'])}" for r in rows),
        )
    if len({r["mIoU_source"] for r in rows if r["mIoU"] is not None}) > 1:
        log.warning("the mIoU come from different splits or sources (see the mIoU_source column)")
    classes = list(dict.fromkeys(c for r in rows for c in r["per_class_iou"]))
    out.mkdir(parents=True, exist_ok=True)
    cols = [
        "run",
        "architecture",
        "encoder",
        "params_m",
        "train_minutes",
        "train_images_per_s",
        "latency_ms",
        "eval_split",
        "mIoU",
        "mIoU_source",
    ]
    cols = [c for c in cols if any(c in r for r in rows)]

    def fmt(v):
        if v is None:
            return "-"
        return f"{v:.4f}" if isinstance(v, float) and v <= 1 else str(v)

    md = ["| " + " | ".join(cols + classes) + " |", "|" + "---|" * (len(cols) + len(classes))]
    for r in rows:
        md.append(
            "| "
            + " | ".join(
                [fmt(r.get(c)) for c in cols] + [fmt(r["per_class_iou"].get(c)) for c in classes]
            )
            + " |"
        )
    write_atomic(out / "compare.md", "\n".join(md) + "\n")
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(cols + classes)
    for r in rows:
        w.writerow([r.get(c) for c in cols] + [r["per_class_iou"].get(c) for c in classes])
    write_atomic(out / "compare.csv", buf.getvalue())
    write_json(out / "compare.json", rows)
    plot = None
    if size is not None:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for r in rows:
            if r["mIoU"] is not None:
                ax.scatter(r["latency_ms"], 100 * r["mIoU"], s=40 + 8 * r["params_m"], alpha=0.7)
                ax.annotate(
                    r["run"],
                    (r["latency_ms"], 100 * r["mIoU"]),
                    textcoords="offset points",
                    xytext=(6, 4),
                    fontsize=8,
                )
        ax.set_xlabel(f"latency per {size[0]}x{size[1]} image, ms ({backend} backend)")
        ax.set_ylabel("mIoU %")
        ax.set_title("accuracy against speed (marker size: parameters)")
        ax.grid(alpha=0.3)
        plot = out / "miou_vs_latency.png"
        fig.savefig(plot, dpi=110, bbox_inches="tight")
        plt.close(fig)
    table = "<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols + classes) + "</tr>"
    for r in rows:
        cells = [fmt(r.get(c)) for c in cols] + [fmt(r["per_class_iou"].get(c)) for c in classes]
        table += "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in cells) + "</tr>"
    table += "</table>"
    img = ""
    if plot is not None:
        img = f'<img alt="mIoU against latency" src="data:image/png;base64,{base64.b64encode(plot.read_bytes()).decode()}">'
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>seglab compare</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem}}td,th{{padding:.25rem .6rem;border-bottom:1px solid #ddd;text-align:right}}table{{border-collapse:collapse}}img{{max-width:100%}}</style>
</head><body><h1>Runs compared</h1>{table}{img}</body></html>"""
    write_atomic(out / "compare.html", page)
    return rows, out


def learning_curve(
    cfg, fractions: list[float], runs_dir: Path, split: str, out: Path
) -> list[dict]:
    """Train on nested random shares of the train split; mIoU on ``split`` per share."""
    from seglab.data.dataset import DatasetDefinition
    from seglab.evaluation.evaluate import evaluate
    from seglab.training.train import train

    if not fractions or any(not 0 < f <= 1 for f in fractions):
        raise SeglabError(f"--fractions {fractions}: give shares in (0, 1], e.g. 0.1,0.25,0.5,1")
    n_total = len(DatasetDefinition.from_config(cfg.data).pairs("train"))
    rows = []
    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(set(fractions)):
        c = cfg.model_copy(deep=True)
        c.data.train_fraction = f
        c.name = f"{cfg.name}-lc{round(100 * f)}"
        n = max(1, int(np.ceil(f * n_total)))  # as SegDataset keeps it
        if c.train.max_steps:  # equal steps: a small share has many short epochs, so
            # validate about 8 times per run
            epochs = np.ceil(c.train.max_steps / np.ceil(n / c.train.batch_size))
            c.train.val_every = max(c.train.val_every, int(np.ceil(epochs / 8)))
        run = train(c, runs_dir)
        metrics, _ = evaluate(run, split, report=False)
        rows.append(
            {
                "fraction": f,
                "train_images": n,
                "run": str(run),
                "mIoU": metrics["mIoU"],
                "split": split,
            }
        )
        write_json(out / "learning_curve.json", rows)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["train_images"] for r in rows], [100 * r["mIoU"] for r in rows], marker="o")
    for r in rows:
        ax.annotate(
            f"{100 * r['mIoU']:.1f}%",
            (r["train_images"], 100 * r["mIoU"]),
            textcoords="offset points",
            xytext=(4, -12),
            fontsize=8,
        )
    ax.set_xscale("log")
    ax.set_xlabel("labelled training images (log scale)")
    ax.set_ylabel(f"{split} mIoU %")
    ax.set_title(f"learning curve: {cfg.name}")
    ax.grid(alpha=0.3, which="both")
    fig.savefig(out / "learning_curve.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return rows
