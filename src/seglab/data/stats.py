"""Data set statistics for ``seglab data stats``: class frequencies, image sizes, mean/std and
suggested class weights.

Every image and mask is decoded once, through :meth:`SegDataset.load` (so format-specific
mask readers and the mask checks apply), and nothing is cached.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from seglab.data.dataset import (
    DatasetDefinition,
    SegDataset,
    inverse_log_weights,
    median_frequency_weights,
)
from seglab.data.formats import Item, get_format
from seglab.errors import SeglabError

#: ``progress(stage, done, total)``: called after each unit of work (an image, a file, a block
#: of bytes); ``total`` is None when unknown.
Progress = Callable[[str, int, int | None], None]

DEFAULT_SPLITS = ("train", "val", "test")


def candidate_splits(definition: DatasetDefinition) -> list[str]:
    """Split names to look at by default: those of ``data.splits``, else train/val/test."""
    return list(definition.splits) or list(DEFAULT_SPLITS)


def available_splits(
    definition: DatasetDefinition, splits: Iterable[str] | None
) -> tuple[dict[str, list[Item]], dict[str, str]]:
    """The items of each split and, when ``splits`` is None, the default splits skipped with the
    reason (empty or not found). Explicitly requested splits must exist (errors propagate)."""
    fmt = get_format(definition.format)
    found: dict[str, list[Item]] = {}
    skipped: dict[str, str] = {}
    if splits is not None:
        for s in splits:
            found[s] = definition.pairs(s)
        return found, skipped
    for s in candidate_splits(definition):
        try:
            items = fmt.list_split(definition.root, s, definition.splits.get(s))
        except SeglabError as err:
            skipped[s] = str(err)
            continue
        if items:
            found[s] = items
        else:
            skipped[s] = "empty"
    if not found:
        raise SeglabError(
            f"no split of {definition.root} has images (looked for {', '.join(skipped)}); "
            "check data.root and data.splits"
        )
    return found, skipped


def _size_summary(sizes: list[tuple[int, int]]) -> dict:
    """min/median/max of heights and widths and the count of each distinct ``WxH`` size."""
    if not sizes:
        return {"count": 0}
    hw = np.array(sizes, dtype=np.int64)
    hist = Counter(f"{w}x{h}" for h, w in sizes)
    return {
        "count": len(sizes),
        "height": {
            "min": int(hw[:, 0].min()),
            "median": float(np.median(hw[:, 0])),
            "max": int(hw[:, 0].max()),
        },
        "width": {
            "min": int(hw[:, 1].min()),
            "median": float(np.median(hw[:, 1])),
            "max": int(hw[:, 1].max()),
        },
        "histogram": dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0]))),
    }


def dataset_stats(
    definition: DatasetDefinition,
    splits: list[str] | None = None,
    progress: Progress | None = None,
) -> dict:
    """Statistics of a data set, JSON-serialisable.

    ``splits`` None: every split of ``data.splits`` (or train/val/test) that exists; the ones
    missing or empty are listed under ``skipped_splits``.

    Per split: ``images``, ``labelled`` (images with a mask), ``class_pixels`` (per class),
    ``ignore_pixels`` (pixels equal to ``ignore_index``, not part of any class),
    ``labelled_pixels`` (sum of ``class_pixels``), ``class_frequency`` (``class_pixels /
    labelled_pixels``), ``class_images`` (images where the class occurs), ``image_sizes``
    (min/median/max height and width, histogram of ``WxH``).

    Over the ``train`` split (else the weights' split, else the first; ``mean_std_split``):
    ``mean``/``std`` per channel on the 0-255 scale after channel adaptation (usable as
    ``data.mean``/``data.std``). Over the ``train`` split if it has masks, else the first
    split with masks (``reference_split``; no weights when no split has masks):
    ``class_weights`` ``median_frequency`` (SegNet, via
    :func:`seglab.data.dataset.median_frequency_weights`) and ``inverse_log`` (ENet,
    ``1 / ln(1.02 + p_class)``).
    """
    items_by_split, skipped = available_splits(definition, splits)
    n = definition.num_classes
    ch = definition.in_channels
    ignore = definition.ignore_index
    out_splits: dict[str, dict] = {}
    acc: dict[str, dict] = {}
    all_sizes: list[tuple[int, int]] = []
    total = sum(len(v) for v in items_by_split.values())
    done = 0
    for split, items in items_by_split.items():
        ds = SegDataset(definition, split, cache=False, require_masks=False)
        ds.pairs = items
        counts = np.zeros(n, dtype=np.int64)
        present_pixels = np.zeros(n, dtype=np.int64)
        class_images = np.zeros(n, dtype=np.int64)
        ignore_pixels = 0
        labelled = 0
        sizes: list[tuple[int, int]] = []
        px_sum = np.zeros(ch, dtype=np.uint64)
        px_sq = np.zeros(ch, dtype=np.uint64)
        px_n = 0
        for i in range(len(ds)):
            img, mask = ds.load(i)
            sizes.append((int(img.shape[0]), int(img.shape[1])))
            flat = img.reshape(-1, ch)
            px_sum += flat.sum(axis=0, dtype=np.uint64)
            sq = flat.astype(np.uint32)
            px_sq += (sq * sq).sum(axis=0, dtype=np.uint64)
            px_n += flat.shape[0]
            if mask is not None:
                labelled += 1
                bc = np.bincount(mask.ravel(), minlength=256)
                c = bc[:n].astype(np.int64)
                counts += c
                present_pixels += np.where(c > 0, c.sum(), 0)
                class_images += c > 0
                ignore_pixels += int(bc[ignore])
            done += 1
            if progress:
                progress(f"stats {split}", done, total)
        lab = int(counts.sum())
        out_splits[split] = {
            "images": len(items),
            "labelled": labelled,
            "labelled_pixels": lab,
            "ignore_pixels": ignore_pixels,
            "class_pixels": counts.tolist(),
            "class_frequency": (counts / lab if lab else np.zeros(n)).tolist(),
            "class_images": class_images.tolist(),
            "image_sizes": _size_summary(sizes),
        }
        all_sizes += sizes
        mean = px_sum.astype(np.float64) / max(px_n, 1)
        var = px_sq.astype(np.float64) / max(px_n, 1) - mean * mean
        acc[split] = {
            "labelled": labelled,
            "mean": mean,
            "std": np.sqrt(np.maximum(var, 0.0)),
            "counts": counts,
            "present": present_pixels,
        }

    labelled_splits = [s for s, a in acc.items() if a["labelled"]]
    ref = "train" if "train" in labelled_splits else next(iter(labelled_splits), None)
    ref_data = acc[ref] if ref else {}
    mean_split = "train" if "train" in acc else (ref or next(iter(acc)))

    result: dict = {
        "format": definition.format,
        "root": str(definition.root),
        "classes": list(definition.classes),
        "ignore_index": ignore,
        "in_channels": ch,
        "splits": out_splits,
        "skipped_splits": skipped,
        "image_sizes": _size_summary(all_sizes),
        "mean_std_split": mean_split,
        "mean": [round(float(v), 4) for v in acc[mean_split]["mean"]],
        "std": [round(float(v), 4) for v in acc[mean_split]["std"]],
        "reference_split": ref,
    }
    if ref_data:
        result["class_weights"] = {
            "median_frequency": median_frequency_weights(
                ref_data["counts"], ref_data["present"]
            ).tolist(),
            "inverse_log": inverse_log_weights(ref_data["counts"]).tolist(),
        }
    return result


def plot_class_frequencies(stats: dict, path: Path) -> Path:
    """A grouped bar chart (one bar per split) of each class's pixel frequency, as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    classes = stats["classes"]
    splits = [s for s, v in stats["splits"].items() if v["labelled_pixels"] > 0]
    fig = Figure(figsize=(max(6.0, 0.6 * len(classes) + 2), 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = np.arange(len(classes))
    width = 0.8 / max(len(splits), 1)
    for k, s in enumerate(splits):
        freq = np.asarray(stats["splits"][s]["class_frequency"]) * 100
        ax.bar(x + (k - (len(splits) - 1) / 2) * width, freq, width, label=s)
    ax.set_xticks(x, classes, rotation=45 if len(classes) > 6 else 0, ha="right")
    ax.set_ylabel("pixels (% of labelled)")
    ax.set_title(f"class frequency ({stats['format']}: {Path(stats['root']).name})")
    if len(classes) > 8:
        ax.set_yscale("log")
    if splits:
        ax.legend()
    fig.savefig(path, dpi=100)
    return path


def write_stats(stats: dict, out_dir: Path) -> list[Path]:
    """Write ``stats.json`` and ``class_frequency.png`` into ``out_dir`` (created)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    js = out_dir / "stats.json"
    js.write_text(json.dumps(stats, indent=2) + "\n")
    png = plot_class_frequencies(stats, out_dir / "class_frequency.png")
    return [js, png]
