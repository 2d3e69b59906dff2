"""``report.html``: the evaluation as pictures — metric table, per-class IoU bars, a
row-normalised confusion matrix, training curves and a gallery of the best and worst
images (image | ground truth | prediction | errors). Plots are matplotlib PNGs, written
beside the report and embedded in it, so the HTML file alone is enough to share."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from seglab.inference.predictor import colorize  # noqa: E402
from seglab.runs import write_atomic  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _colors01(colors: list) -> list:
    return [tuple(c / 255 for c in rgb) for rgb in colors]


def plot_confusion(cm: np.ndarray, classes: list[str], path: Path) -> Path:
    """Rows (ground truth) normalised to 1: the diagonal is each class's recall."""
    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    k = len(classes)
    side = max(4.0, 0.55 * k + 2)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title("confusion matrix (each row sums to 1)")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if norm[i, j] >= 0.005:
                    ax.text(
                        j,
                        i,
                        f"{norm[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black",
                    )
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)


def plot_class_iou(metrics: dict, colors: list, path: Path) -> Path:
    names = list(metrics["per_class"])
    iou = [metrics["per_class"][n]["iou"] for n in names]
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(names) + 2), 3.5))
    scored = [i for i, v in enumerate(iou) if v is not None]
    colors01 = _colors01(colors)
    ax.bar(
        scored,
        [100 * iou[i] for i in scored],
        color=[colors01[i] for i in scored],
        edgecolor="black",
    )
    for i, v in enumerate(iou):
        if v is None:  # in neither ground truth nor prediction: no score, not 0%
            ax.text(i, 1, "n/a", ha="center", va="bottom", fontsize=8, color="dimgray")
    if metrics["mIoU"] is not None:
        ax.axhline(
            100 * metrics["mIoU"],
            color="crimson",
            ls="--",
            label=f"mIoU {100 * metrics['mIoU']:.1f}%",
        )
        ax.legend(loc="upper right")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_ylabel("IoU %")
    ax.set_ylim(0, 100)
    ax.set_title("IoU per class")
    return _save(fig, path)


def plot_curves(epochs: list[dict], path: Path) -> Path | None:
    """Training loss, validation mIoU and learning rate per epoch (from metrics.json)."""
    if not epochs:
        return None
    ep = [e["epoch"] for e in epochs]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.3))
    loss = [(e["epoch"], e["train_loss"]) for e in epochs if e.get("train_loss") is not None]
    val = [(e["epoch"], 100 * e["val_mIoU"]) for e in epochs if e.get("val_mIoU") is not None]
    if loss:
        axes[0].plot(*zip(*loss, strict=True), color="tab:blue")
    axes[0].set_title("training loss")
    if val:
        axes[1].plot(*zip(*val, strict=True), marker="o", ms=3, color="tab:green")
        best = max(val, key=lambda v: v[1])
        axes[1].annotate(
            f"best {best[1]:.1f}%", best, textcoords="offset points", xytext=(-40, -15)
        )
    axes[1].set_title("validation mIoU %")
    axes[2].plot(ep, [e["lr"] for e in epochs], color="tab:orange")
    axes[2].set_title("learning rate")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    return _save(fig, path)


def error_map(target: np.ndarray, pred: np.ndarray, ignore: int | None) -> np.ndarray:
    """RGB: wrong pixels red, correct pixels dark grey, ignored pixels light grey."""
    out = np.full((*target.shape, 3), 40, np.uint8)
    out[pred != target] = (230, 30, 30)
    if ignore is not None:
        out[target == ignore] = (200, 200, 200)
    return out


def plot_gallery(rows: list[dict], classes: list[str], colors: list, ignore, path: Path) -> Path:
    """One row per image: image | ground truth | prediction | errors, titled with its mIoU."""
    n = len(rows)
    fig, axes = plt.subplots(n, 4, figsize=(13, 3.1 * n), squeeze=False)
    for r, row in enumerate(rows):
        image = row["image"]
        rgb = image[:, :, :3] if image.shape[2] >= 3 else np.repeat(image[:, :, :1], 3, 2)
        target = row["target"]
        shown_target = colorize(
            np.where(target == ignore, 0, target) if ignore is not None else target, colors
        )
        if ignore is not None:
            shown_target[target == ignore] = (255, 255, 255)
        panels = [
            rgb,
            shown_target,
            colorize(row["pred"], colors),
            error_map(target, row["pred"], ignore),
        ]
        titles = [
            f"{row['name']} ({row['group']})",
            "ground truth",
            f"prediction, mIoU {100 * row['miou']:.1f}%"
            if row["miou"] is not None
            else "prediction",
            f"errors: {100 * (row['pred'] != target)[target != (ignore if ignore is not None else -1)].mean():.1f}% of pixels",
        ]
        for ax, panel, title in zip(axes[r], panels, titles, strict=True):
            ax.imshow(panel)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    handles = [
        Patch(facecolor=c, edgecolor="black", label=name)
        for name, c in zip(classes, _colors01(colors), strict=False)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(classes), 8), frameon=False)
    fig.tight_layout(rect=(0, 0.04 if n > 1 else 0.08, 1, 1))
    return _save(fig, path)


def _img_tag(path: Path | None, alt: str) -> str:
    if path is None:
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}"><figcaption>{html.escape(alt)}</figcaption></figure>'


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}"


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1200px;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem} .sub{color:#666;margin-top:0}
.cards{display:flex;gap:1rem;flex-wrap:wrap;margin:1rem 0}
.card{background:#f4f6fa;border-radius:8px;padding:.8rem 1.2rem;min-width:9rem}
.card b{display:block;font-size:1.6rem} .card span{color:#555;font-size:.85rem}
table{border-collapse:collapse;margin:1rem 0} th,td{padding:.3rem .7rem;text-align:right;border-bottom:1px solid #ddd}
th:first-child,td:first-child{text-align:left} tr:hover{background:#f7f7f7}
.swatch{display:inline-block;width:.9rem;height:.9rem;border:1px solid #333;margin-right:.4rem;vertical-align:middle}
figure{margin:1.5rem 0} figure img{max-width:100%} figcaption{color:#666;font-size:.85rem}
"""


def write_report(
    out: Path,
    metrics: dict,
    classes: list[str],
    colors: list,
    ignore_index: int | None,
    gallery: list[dict],
    epochs: list[dict] | None = None,
    title: str = "seglab evaluation",
) -> Path:
    """Write the PNGs and ``report.html`` into ``out``; returns the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    cm_png = plot_confusion(
        np.asarray(metrics["confusion_matrix"]), classes, out / "confusion_matrix.png"
    )
    iou_png = plot_class_iou(metrics, colors, out / "class_iou.png")
    curves_png = plot_curves(epochs or [], out / "training_curves.png") if epochs else None
    gallery_png = (
        plot_gallery(gallery, classes, colors, ignore_index, out / "gallery.png")
        if gallery
        else None
    )
    cards = "".join(
        f'<div class="card"><b>{_pct(metrics[k])}%</b><span>{label}</span></div>'
        for k, label in (
            ("mIoU", "mean IoU"),
            ("mDice", "mean Dice"),
            ("pixel_accuracy", "pixel accuracy"),
            ("mean_class_accuracy", "mean class accuracy"),
            ("fw_iou", "frequency-weighted IoU"),
        )
    )
    rows = "".join(
        f'<tr><td><span class="swatch" style="background:rgb{tuple(colors[i])}"></span>{html.escape(name)}</td>'
        f"<td>{_pct(m['iou'])}</td><td>{_pct(m['dice'])}</td><td>{_pct(m['precision'])}</td>"
        f"<td>{_pct(m['recall'])}</td><td>{m['pixels']:,}</td></tr>"
        for i, (name, m) in enumerate(metrics["per_class"].items())
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{CSS}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="sub">split <b>{html.escape(str(metrics.get("split", "")))}</b>, {metrics.get("images", "?")} images,
{metrics.get("pixels", 0):,} scored pixels; {html.escape(str(metrics.get("checkpoint", metrics.get("predictions", ""))))}</p>
<div class="cards">{cards}</div>
<h2>Per class</h2>
<table><thead><tr><th>class</th><th>IoU %</th><th>Dice %</th><th>precision %</th><th>recall (accuracy) %</th><th>pixels</th></tr></thead>
<tbody>{rows}</tbody></table>
{_img_tag(iou_png, "IoU per class; dashed line: mIoU; n/a: class in neither ground truth nor prediction")}
<h2>Confusions</h2>
{_img_tag(cm_png, "row-normalised confusion matrix: where each class's pixels went")}
{"<h2>Training</h2>" + _img_tag(curves_png, "training loss, validation mIoU and learning rate per epoch") if curves_png else ""}
{"<h2>Best and worst images</h2>" + _img_tag(gallery_png, "image | ground truth | prediction | errors (red: wrong, light grey: ignored)") if gallery_png else ""}
<script type="application/json" id="metrics">{html.escape(json.dumps({k: v for k, v in metrics.items() if k != "confusion_matrix"}))}</script>
</body></html>
"""
    path = out / "report.html"
    write_atomic(path, page)
    return path
