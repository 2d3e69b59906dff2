"""Classical segmentation baselines, scored by the same metrics as the deep models.

Each method turns an image into *regions* (threshold sides, grown regions, watershed
basins and lines, GrabCut foreground, ...). Which class a region stands for is learned on
the tuning split by majority vote (so "membranes are dark" or "nuclei are bright" is
found from the labels, not assumed), together with a small grid search over the method's
parameters. Superpixels get a per-superpixel random forest instead. Everything image
related comes from scikit-image, OpenCV and scikit-learn.

    seglab classic otsu data/isbi.yaml --split val --out preds/otsu
    seglab evaluate data/isbi.yaml --predictions preds/otsu --split val
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage import feature, filters, measure, morphology, segmentation

from seglab.data.dataset import DatasetDefinition, SegDataset
from seglab.errors import SeglabError
from seglab.evaluation.metrics import confusion_matrix, metrics_from_confusion

log = logging.getLogger("seglab")


def grey(image: np.ndarray, sigma: float = 0.0) -> np.ndarray:
    """uint8 H x W x C -> float grey in [0, 1], optionally Gaussian-smoothed."""
    g = image[:, :, :3].mean(2) if image.ndim == 3 else image.astype(np.float32)
    g = g.astype(np.float32) / 255.0
    return filters.gaussian(g, sigma) if sigma > 0 else g


def dark_majority(image: np.ndarray) -> np.ndarray:
    """Invert the image when most of it lies above its Otsu threshold, so the majority
    phase (usually the background) is dark: bright-field and fluorescence images of the
    same objects then agree on which side of a threshold the objects are."""
    g = grey(image)
    if g.max() > g.min() and (g > filters.threshold_otsu(g)).mean() > 0.5:
        return 255 - image
    return image


# -- region makers: image -> int regions (small ids) ------------------------------------
def threshold_global(image, method: str = "otsu", sigma: float = 0.0) -> np.ndarray:
    g = grey(image, sigma)
    fn = {
        "otsu": filters.threshold_otsu,
        "li": filters.threshold_li,
        "triangle": filters.threshold_triangle,
    }[method]
    return (g > fn(g)).astype(np.int32)


def threshold_multiotsu(image, regions: int = 3, sigma: float = 0.0) -> np.ndarray:
    g = grey(image, sigma)
    try:
        return np.digitize(g, filters.threshold_multiotsu(g, classes=regions)).astype(np.int32)
    except ValueError:  # too few grey levels for that many classes
        return (g > filters.threshold_otsu(g)).astype(np.int32)


def threshold_local(image, block_size: int = 31, offset: float = 0.0, sigma: float = 0.0):
    g = grey(image, sigma)
    return (g > filters.threshold_local(g, block_size, offset=offset)).astype(np.int32)


def edges(image, sigma: float = 2.0, radius: int = 2) -> np.ndarray:
    """Canny edges, closed, holes filled: 2 = edge, 1 = enclosed, 0 = outside."""
    e = feature.canny(grey(image), sigma=sigma)
    closed = morphology.binary_closing(e, morphology.disk(radius))
    filled = ndi.binary_fill_holes(closed)
    out = filled.astype(np.int32)
    out[e] = 2
    return out


def region_growing(image, seed_percentile: float = 95, tolerance: float = 0.15, sigma=1.0):
    """Seeds: the brightest pixels; grown over connected pixels within ``tolerance`` of the
    seeds' mean intensity. 1 = grown, 0 = rest (dark seeds are learned via the mapping)."""
    g = grey(image, sigma)
    seeds = g >= np.percentile(g, seed_percentile)
    within = np.abs(g - g[seeds].mean()) <= tolerance
    lab = measure.label(within, connectivity=1)
    keep = np.unique(lab[seeds & within])
    return np.isin(lab, keep[keep > 0]).astype(np.int32)


def watershed(
    image, sigma: float = 1.0, h: float = 0.05, bright_walls: bool = False, width: int = 1
):
    """Flood the smoothed intensity from its h-minima with watershed lines (dilated to
    ``width`` pixels): 0 = line, 1 = basin. Lines follow ridges, so for dark boundaries
    (membranes) the image is inverted (``bright_walls`` False)."""
    g = grey(image, sigma)
    relief = g if bright_walls else 1.0 - g
    markers = measure.label(morphology.h_minima(relief, h))
    lines = segmentation.watershed(relief, markers, watershed_line=True) == 0
    if width > 1:
        lines = cv2.dilate(lines.astype(np.uint8), np.ones((width, width), np.uint8)) > 0
    return (~lines).astype(np.int32)


def watershed_distance(image, sigma: float = 1.0, h: float = 2.0) -> np.ndarray:
    """Split the Otsu foreground (the minority side) by flooding its distance transform from
    h-maxima (touching round objects such as nuclei): 0 = background, 1 = object,
    2 = line between touching objects."""
    g = grey(image, sigma)
    fg = g > filters.threshold_otsu(g)
    if fg.mean() > 0.5:
        fg = ~fg
    dist = ndi.distance_transform_edt(fg)
    markers = measure.label(morphology.h_maxima(dist, h))
    lab = segmentation.watershed(-dist, markers, mask=fg, watershed_line=True)
    out = fg.astype(np.int32)
    out[fg & (lab == 0)] = 2
    return out


def graph_cut(image, iterations: int = 3, sigma: float = 1.0) -> np.ndarray:
    """OpenCV GrabCut (graph cut on colour GMMs), initialised from Otsu's two sides."""
    g = grey(image, sigma)
    bright = g > filters.threshold_otsu(g)
    rgb = np.repeat(image[:, :, :1], 3, 2) if image.ndim == 2 or image.shape[2] == 1 else image
    rgb = np.ascontiguousarray(rgb[:, :, :3], dtype=np.uint8)
    mask = np.where(bright, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(rgb, mask, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # a flat image: nothing to cut
        return bright.astype(np.int32)
    return np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.int32)


def superpixels(image, algorithm: str = "slic", n_segments: int = 600, scale: float = 100):
    """Superpixel ids (SLIC or Felzenszwalb); classified by a forest, not by majority."""
    rgb = (
        image
        if image.ndim == 3 and image.shape[2] >= 3
        else np.repeat(grey(image)[..., None], 3, 2)
    )
    rgb = rgb[:, :, :3]
    if algorithm == "felzenszwalb":
        return segmentation.felzenszwalb(rgb, scale=scale, sigma=0.8, min_size=20)
    return segmentation.slic(rgb, n_segments=n_segments, compactness=10, start_label=0)


@dataclass(frozen=True)
class Method:
    fn: Callable[..., np.ndarray]
    grid: dict[str, list]
    summary: str
    fixed: dict | None = None


METHODS: dict[str, Method] = {
    "otsu": Method(
        threshold_global,
        {"sigma": [0, 1, 2], "polarity": ["keep", "dark_majority"]},
        "global Otsu threshold",
        {"method": "otsu"},
    ),
    "li": Method(
        threshold_global,
        {"sigma": [0, 1, 2], "polarity": ["keep", "dark_majority"]},
        "Li's minimum cross-entropy threshold",
        {"method": "li"},
    ),
    "triangle": Method(
        threshold_global,
        {"sigma": [0, 1, 2], "polarity": ["keep", "dark_majority"]},
        "triangle threshold",
        {"method": "triangle"},
    ),
    "multiotsu": Method(
        threshold_multiotsu,
        {"regions": [3, 4], "sigma": [0, 1], "polarity": ["keep", "dark_majority"]},
        "multi-Otsu, regions mapped to classes",
    ),
    "adaptive": Method(
        threshold_local,
        {
            "block_size": [15, 35, 75],
            "offset": [-0.03, 0.0, 0.03],
            "sigma": [0, 1],
            "polarity": ["keep", "dark_majority"],
        },
        "local (adaptive) threshold",
    ),
    "edges": Method(
        edges, {"sigma": [1, 2, 3], "radius": [1, 3]}, "Canny edges, closing, hole filling"
    ),
    "region_growing": Method(
        region_growing,
        {
            "seed_percentile": [80, 95],
            "tolerance": [0.1, 0.2, 0.3],
            "polarity": ["keep", "dark_majority"],
        },
        "seeded region growing with an intensity tolerance",
    ),
    "watershed": Method(
        watershed,
        {
            "sigma": [1, 2],
            "h": [0.02, 0.05, 0.1],
            "bright_walls": [False, True],
            "width": [1, 3, 5],
        },
        "watershed of intensity from h-minima markers",
    ),
    "watershed_distance": Method(
        watershed_distance,
        {"sigma": [0, 1], "h": [1, 2, 4]},
        "watershed of the distance transform from h-maxima markers",
    ),
    "graphcut": Method(
        graph_cut,
        {"sigma": [0, 1], "polarity": ["keep", "dark_majority"]},
        "GrabCut graph cut initialised from Otsu",
    ),
    "superpixels": Method(
        superpixels,
        {"algorithm": ["slic"], "n_segments": [300, 1000]},
        "SLIC superpixels + random forest per superpixel",
    ),
    "felzenszwalb": Method(
        superpixels,
        {"algorithm": ["felzenszwalb"], "scale": [50, 200]},
        "Felzenszwalb superpixels + random forest",
    ),
}


# -- regions -> classes --------------------------------------------------------------
def region_votes(regions: np.ndarray, mask: np.ndarray, k: int, ignore: int | None) -> np.ndarray:
    """``R x K`` pixel counts of each class in each region."""
    valid = mask != ignore if ignore is not None else np.ones(mask.shape, bool)
    valid &= mask < k
    r = regions[valid].astype(np.int64)
    n = int(regions.max()) + 1
    return np.bincount(r * k + mask[valid].astype(np.int64), minlength=n * k).reshape(n, k)


def superpixel_features(image: np.ndarray, sp: np.ndarray) -> np.ndarray:
    """Per superpixel: mean and std of each channel, mean grey gradient, relative size."""
    img = image if image.ndim == 3 else image[:, :, None]
    n = int(sp.max()) + 1
    idx = sp.ravel()
    count = np.bincount(idx, minlength=n).astype(np.float64) + 1e-9
    feats = []
    for c in range(min(img.shape[2], 3)):
        v = img[:, :, c].ravel().astype(np.float64) / 255
        mean = np.bincount(idx, v, n) / count
        feats += [mean, np.sqrt(np.maximum(np.bincount(idx, v * v, n) / count - mean**2, 0))]
    grad = filters.sobel(grey(image)).ravel()
    feats += [np.bincount(idx, grad, n) / count, count / idx.size]
    return np.stack(feats, 1)


class Classic:
    """A tuned classical method: ``fit`` on labelled images, ``predict`` masks."""

    def __init__(self, name: str, num_classes: int, ignore_index: int | None) -> None:
        if name not in METHODS:
            raise SeglabError(
                f"unknown classical method {name!r}; choose one of {', '.join(METHODS)}"
            )
        self.name, self.method = name, METHODS[name]
        self.k, self.ignore = num_classes, ignore_index
        self.params: dict = {}
        self.model = None  # region -> class array, or the superpixel forest

    @property
    def is_superpixel(self) -> bool:
        return self.method.fn is superpixels

    def regions(self, image: np.ndarray, params: dict) -> np.ndarray:
        params = dict(params)
        if params.pop("polarity", "keep") == "dark_majority":
            image = dark_majority(image)
        return self.method.fn(image, **(self.method.fixed or {}), **params)

    def _fit_params(self, samples, params: dict):
        if self.is_superpixel:
            from sklearn.ensemble import RandomForestClassifier

            x, y = [], []
            for image, mask in samples:
                sp = self.regions(image, params)
                votes = region_votes(sp, mask, self.k, self.ignore)
                labelled = votes.sum(1) > 0
                x.append(superpixel_features(image, sp)[labelled])
                y.append(votes[labelled].argmax(1))
            forest = RandomForestClassifier(
                n_estimators=60, min_samples_leaf=2, n_jobs=1, random_state=0
            )
            forest.fit(np.concatenate(x), np.concatenate(y))
            return forest
        votes = np.zeros((0, self.k), np.float64)
        for image, mask in samples:
            v = region_votes(self.regions(image, params), mask, self.k, self.ignore)
            # each image gives each region one vote, split by the region's class shares
            # there, so a single large image cannot outvote many small ones
            v = v / np.maximum(v.sum(1, keepdims=True), 1)
            n = max(len(votes), len(v))
            votes = np.pad(votes, ((0, n - len(votes)), (0, 0))) + np.pad(
                v, ((0, n - len(v)), (0, 0))
            )
        return votes.argmax(1)  # region -> its majority class over the labelled images

    def _predict_with(self, image: np.ndarray, params: dict, model) -> np.ndarray:
        reg = self.regions(image, params)
        if self.is_superpixel:
            return model.predict(superpixel_features(image, reg))[reg].astype(np.uint8)
        mapping = np.asarray(model)
        reg = np.minimum(reg, len(mapping) - 1)
        return mapping[reg].astype(np.uint8)

    def fit(self, samples: list[tuple[np.ndarray, np.ndarray]]) -> dict:
        """Grid search: fit the mapping/forest per parameter set on half of ``samples``,
        score mIoU on the other half, keep the best, refit on all. Returns the search log."""
        half = max(1, len(samples) // 2)
        fit_set, score_set = samples[:half], samples[half:] or samples
        grid = self.method.grid
        trials = []
        for values in itertools.product(*grid.values()):
            params = dict(zip(grid, values, strict=True))
            model = self._fit_params(fit_set, params)
            cm = sum(
                confusion_matrix(m, self._predict_with(im, params, model), self.k, self.ignore)
                for im, m in score_set
            )
            trials.append(
                {
                    "params": params,
                    "mIoU": metrics_from_confusion(cm, [str(i) for i in range(self.k)])["mIoU"],
                }
            )
        best = max(trials, key=lambda t: t["mIoU"] or 0.0)
        self.params = best["params"]
        self.model = self._fit_params(samples, self.params)
        return {"method": self.name, "best": best, "trials": trials}

    def predict(self, image: np.ndarray) -> np.ndarray:
        return self._predict_with(image, self.params, self.model)


def run_classic(
    name: str,
    definition: DatasetDefinition,
    split: str,
    out: Path,
    tune_split: str = "train",
    tune_images: int = 12,
    progress=None,
) -> tuple[list[Path], dict]:
    """Tune ``name`` on ``tune_split`` (evenly spaced images), predict ``split`` into
    ``out/<stem>_mask.png``; returns (mask paths, search log)."""
    from seglab.inference.predict import write_png

    if tune_images < 1:
        raise SeglabError(f"--tune-images {tune_images}: tune on at least 1 labelled image")
    tune = SegDataset(definition, tune_split, cache=False)
    step = max(1, len(tune) // tune_images)
    samples = [tune.load(i) for i in range(0, len(tune), step)][:tune_images]
    method = Classic(name, definition.num_classes, definition.ignore_index)
    search = method.fit(samples)
    log.info(
        "%s: best %s (tuning mIoU %.3f)",
        name,
        search["best"]["params"],
        search["best"]["mIoU"] or 0,
    )
    target = SegDataset(definition, split, cache=False, require_masks=False)  # e.g. test
    out.mkdir(parents=True, exist_ok=True)
    written = []
    indices = range(len(target))
    for i in progress(indices) if progress else indices:
        item = target.pairs[i]
        image = target.load(i)[0]
        path = out / f"{Path(item.image).stem}_mask.png"
        write_png(path, method.predict(image))
        written.append(path)
    return written, search
