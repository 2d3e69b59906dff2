"""Reproducible, class-stratified train/val/test splits for ``seglab data split``.

Algorithm (greedy, deterministic for a seed):

1. Each labelled image is reduced to the set of classes present in its mask (the ignore
   value excluded); ``n_c`` is the number of images where class ``c`` occurs.
2. Split sizes are the fractions of the image count, rounded by largest remainder; every
   split with a positive fraction gets at least one image when there are enough images.
3. Images are shuffled with ``numpy.random.default_rng(seed)``, then stably sorted by the
   rarity of their rarest class (smallest ``n_c`` first; images without classes last).
4. Each image goes, among the splits that still have room, to the split that (a) does not
   have its rarest class yet, then (b) is furthest below its quota for that class
   (``fraction * n_c`` minus images already holding it), then (c) has the most room left
   relative to its size; remaining ties go to the earlier split (train before val).

So a class found in at least as many images as there are splits appears in every split
(room permitting), rare classes are placed first, and the split sizes are exact.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from seglab.data.dataset import DatasetDefinition
from seglab.data.formats import Item, get_format
from seglab.data.io import IMAGE_SUFFIXES, read_mask
from seglab.data.stats import Progress, available_splits
from seglab.errors import SeglabError

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
#: formats that read a split from ``<root>/<split>.txt``, one stem per line: the lists
#: :func:`write_splits` writes (the other layouts name their splits their own way)
LIST_FORMATS = ("folder", "dsb2018")


def _check_listable(d: DatasetDefinition) -> None:
    """Refuse a layout that would not read the lists ``seglab data split`` writes."""
    convert = (
        f"convert it first (seglab data convert {d.root} --out DIR, a flat folder layout) "
        "and split DIR/dataset.yaml"
    )
    if d.format not in LIST_FORMATS:
        raise SeglabError(f"the {d.format} layout of {d.root} does not read split lists; {convert}")
    img_dir = d.root / "images"
    if d.format == "folder" and not (
        img_dir.is_dir()
        and any(p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() for p in img_dir.iterdir())
    ):
        raise SeglabError(
            f"{img_dir} holds no images (split sub-folders?): split lists name the files of "
            f"images/ and masks/; {convert}"
        )


def split_sizes(n: int, fractions: Sequence[float]) -> list[int]:
    """``n`` divided by ``fractions`` (normalised) with largest-remainder rounding; each split
    with a positive fraction gets at least one item when ``n`` allows it."""
    f = np.asarray(fractions, dtype=np.float64)
    if f.ndim != 1 or len(f) == 0 or (f < 0).any() or f.sum() <= 0:
        raise SeglabError(
            f"split fractions {list(fractions)} must be non-negative with a positive sum, "
            "e.g. 0.7 0.15 0.15"
        )
    raw = n * f / f.sum()
    sizes = np.floor(raw).astype(int)
    rest = n - int(sizes.sum())
    order = sorted(range(len(f)), key=lambda i: (-(raw[i] - sizes[i]), i))
    for i in order[:rest]:
        sizes[i] += 1
    positive = [i for i in range(len(f)) if f[i] > 0]
    if n >= len(positive):
        for i in positive:
            if sizes[i] == 0:
                sizes[int(np.argmax(sizes))] -= 1
                sizes[i] += 1
    return sizes.tolist()


def _find_mask(mask_dir: Path, stem: str) -> Path | None:
    for suffix in (".png", *IMAGE_SUFFIXES):
        p = mask_dir / f"{stem}{suffix}"
        if p.is_file():
            return p
    return None


def _classes_of(mask: np.ndarray, ignore_index: int | None) -> frozenset[int]:
    present = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))
    return frozenset(int(c) for c in present if c != ignore_index)


def _collect(
    source: DatasetDefinition | Sequence[tuple[str, Path | None]],
    ignore_index: int | None,
    progress: Progress | None,
) -> tuple[list[str], list[frozenset[int]]]:
    """(stems, classes present per stem) of the labelled images of ``source``."""
    stems: list[str] = []
    classes: list[frozenset[int]] = []
    if isinstance(source, DatasetDefinition):
        d = source
        ignore = d.ignore_index if ignore_index is None else ignore_index
        if d.format == "folder":  # every image of images/, whatever lists exist
            files = (d.root / "images").iterdir()
            entries: list[tuple[str, Item]] = [
                (p.stem, Item(p, _find_mask(d.root / "masks", p.stem)))
                for p in sorted(files)
                if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            ]
        else:
            by_split, _ = available_splits(d, None)
            seen: dict[str, Path] = {}
            entries = []
            for items in by_split.values():
                for it in items:
                    stem = it.image.stem
                    if stem in seen:
                        if seen[stem] != it.image:
                            raise SeglabError(
                                f"{it.image} and {seen[stem]} share the stem '{stem}'; "
                                "split lists need unique stems (convert the data set first)"
                            )
                        continue
                    seen[stem] = it.image
                    entries.append((stem, it))
        reader = getattr(get_format(d.format), "read_mask", None)
        unlabelled = 0
        for k, (stem, it) in enumerate(entries):
            if it.mask is None or (reader is None and not Path(it.mask).is_file()):
                unlabelled += 1
            else:
                mask = reader(it, d) if reader else read_mask(it.mask)
                stems.append(stem)
                classes.append(_classes_of(mask, ignore))
            if progress:
                progress("read masks", k + 1, len(entries))
        if unlabelled:
            log.warning("%d images without a mask were left out of the splits", unlabelled)
    else:
        ignore = 255 if ignore_index is None else ignore_index
        seen_stems: set[str] = set()
        for k, (stem, mask_path) in enumerate(source):
            if stem in seen_stems:
                raise SeglabError(f"stem '{stem}' is listed twice; stems must be unique")
            seen_stems.add(stem)
            stems.append(stem)
            classes.append(
                _classes_of(read_mask(mask_path), ignore) if mask_path is not None else frozenset()
            )
            if progress:
                progress("read masks", k + 1, len(source))
    return stems, classes


def make_splits(
    source: DatasetDefinition | Sequence[tuple[str, Path | None]],
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    names: Sequence[str] = SPLIT_NAMES,
    ignore_index: int | None = None,
    progress: Progress | None = None,
) -> dict[str, list[str]]:
    """Split the labelled images of ``source`` into ``names`` (sorted stem lists).

    ``source``: a :class:`DatasetDefinition` of a layout that reads ``<root>/<split>.txt``
    (:data:`LIST_FORMATS`; SeglabError for the others; folder format: every image of
    ``images/`` with its mask in ``masks/``, whatever split lists exist; dsb2018: the union of
    its existing splits; images without a mask are left out) or ``(stem, mask path)`` pairs
    (a None mask counts as an image without classes). ``ignore_index`` defaults to the
    definition's (255 for pairs). Same inputs and seed give the same splits; the method is
    described in this module's docstring.
    """
    if len(names) != len(fractions) or len(set(names)) != len(names):
        raise SeglabError(
            f"need one unique split name per fraction; got names {list(names)} "
            f"for fractions {list(fractions)}"
        )
    if isinstance(source, DatasetDefinition):
        _check_listable(source)
    stems, classes = _collect(source, ignore_index, progress)
    if not stems:
        where = source.root if isinstance(source, DatasetDefinition) else "the given pairs"
        raise SeglabError(f"no labelled images found in {where}; nothing to split")
    k = len(names)
    f = np.asarray(fractions, dtype=np.float64)
    f = f / f.sum() if f.sum() > 0 else f
    sizes = split_sizes(len(stems), fractions)

    n_c = Counter(c for cs in classes for c in cs)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(stems)).tolist()

    def rarest(i: int) -> tuple[int, int] | None:
        return min(((n_c[c], c) for c in classes[i]), default=None)

    order.sort(key=lambda i: r[0] if (r := rarest(i)) else len(stems) + 1)

    count = [0] * k
    have: list[Counter] = [Counter() for _ in range(k)]
    out: list[list[str]] = [[] for _ in range(k)]
    for i in order:
        room = [s for s in range(k) if count[s] < sizes[s]]
        r = rarest(i)
        if r is None:
            best = max(room, key=lambda s: (sizes[s] - count[s]) / sizes[s])
        else:
            n, c = r

            def key(s: int, n: int = n, c: int = c) -> tuple:
                missing = have[s][c] == 0 and f[s] > 0
                return (missing, f[s] * n - have[s][c], (sizes[s] - count[s]) / sizes[s])

            best = max(room, key=key)
        count[best] += 1
        out[best].append(stems[i])
        for c in classes[i]:
            have[best][c] += 1
    return {name: sorted(lst) for name, lst in zip(names, out, strict=True)}


def write_splits(splits: dict[str, list[str]], out: Path, overwrite: bool = False) -> list[Path]:
    """Write ``<out>/<split>.txt`` (one stem per line), the lists the folder format reads.

    Existing list files are kept unless ``overwrite``: the call fails before writing anything.
    """
    out = Path(out)
    paths = [out / f"{name}.txt" for name in splits]
    if not overwrite:
        for p in paths:
            if p.exists():
                raise SeglabError(
                    f"{p} already exists; remove it, write the lists to another folder "
                    "or allow overwriting"
                )
    out.mkdir(parents=True, exist_ok=True)
    for p, stems in zip(paths, splits.values(), strict=True):
        p.write_text("".join(f"{s}\n" for s in stems))
    return paths
