"""Classical baselines: each method segments an easy blob data set well, learns the
polarity from the labels, and is scored by the same evaluation as the deep models."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from conftest import run_cli

from seglab.classic import METHODS, Classic, run_classic
from seglab.data.dataset import load_definition
from seglab.evaluation.evaluate import evaluate_predictions
from seglab.evaluation.metrics import confusion_matrix, metrics_from_confusion


def make_blobs(root, n_train=8, n_val=4, dark_objects=False, seed=0):
    """Nuclei-like images: a few smooth bright (or dark) discs on a noisy background."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for split, n in (("train", n_train), ("val", n_val)):
        stems = []
        for i in range(n):
            mask = np.zeros((96, 96), np.uint8)
            for _ in range(rng.integers(3, 6)):
                c = rng.integers(12, 84, 2)
                cv2.circle(mask, (int(c[0]), int(c[1])), int(rng.integers(6, 12)), 1, -1)
            dark = dark_objects == "alternate" and i % 2 == 1 or dark_objects is True
            fg, bg = (60, 170) if dark else (190, 60)
            img = np.where(mask == 1, fg, bg) + rng.normal(0, 18, mask.shape)
            img = cv2.GaussianBlur(np.clip(img, 0, 255).astype(np.uint8), (3, 3), 0)
            stem = f"{split}_{i:02d}"
            cv2.imwrite(str(root / "images" / f"{stem}.png"), np.dstack([img] * 3))
            cv2.imwrite(str(root / "masks" / f"{stem}.png"), mask)
            stems.append(stem)
        (root / f"{split}.txt").write_text("\n".join(stems) + "\n")
    (root / "classes.json").write_text(
        json.dumps(
            [{"name": "background", "color": [0, 0, 0]}, {"name": "nucleus", "color": [255, 0, 0]}]
        )
    )
    return root


def make_membranes(root, n_train=8, n_val=4, seed=0):
    """EM-like images: Voronoi cells (bright, noisy) separated by dark 2-pixel membranes."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[0:96, 0:96]
    for split, n in (("train", n_train), ("val", n_val)):
        stems = []
        for i in range(n):
            pts = rng.uniform(0, 96, (12, 2))
            d = (yy[..., None] - pts[:, 0]) ** 2 + (xx[..., None] - pts[:, 1]) ** 2
            cells = d.argmin(2)
            edge = (cells != np.roll(cells, 1, 0)) | (cells != np.roll(cells, 1, 1))
            membrane = cv2.dilate(edge.astype(np.uint8), np.ones((2, 2), np.uint8)) > 0
            mask = (~membrane).astype(np.uint8)  # 0 membrane, 1 cell (ISBI's convention)
            img = np.where(membrane, 50, 170) + rng.normal(0, 20, mask.shape)
            img = cv2.GaussianBlur(np.clip(img, 0, 255).astype(np.uint8), (3, 3), 0)
            stem = f"{split}_{i:02d}"
            cv2.imwrite(str(root / "images" / f"{stem}.png"), img)
            cv2.imwrite(str(root / "masks" / f"{stem}.png"), mask)
            stems.append(stem)
        (root / f"{split}.txt").write_text("\n".join(stems) + "\n")
    (root / "classes.json").write_text(
        json.dumps(
            [{"name": "membrane", "color": [0, 0, 0]}, {"name": "cell", "color": [255, 255, 255]}]
        )
    )
    return root


def make_isbi(root, seed=0):
    """The isbi2012 layout (30 labelled slices in train/, 30 unlabelled in test/) of blobs."""
    rng = np.random.default_rng(seed)
    for folder in ("train", "test"):
        (root / folder / "images").mkdir(parents=True)
        for i in range(30):
            mask = np.zeros((32, 32), np.uint8)
            mask[8:20, rng.integers(4, 16) :][:, :10] = 1
            cv2.imwrite(str(root / folder / "images" / f"{i:02d}.png"), 60 + 130 * mask)
            if folder == "train":
                (root / folder / "masks").mkdir(exist_ok=True)
                cv2.imwrite(str(root / folder / "masks" / f"{i:02d}.png"), mask)
    return root


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    return load_definition(make_blobs(tmp_path_factory.mktemp("blobs")))


@pytest.fixture(scope="module")
def membranes(tmp_path_factory):
    return load_definition(make_membranes(tmp_path_factory.mktemp("membranes")))


# Each method on the kind of image it is made for, with a floor on the object class's IoU
# well above what a wrong polarity or an empty mask scores (0 to 0.2 here).
CASES = {name: ("blobs", "nucleus", 0.8) for name in METHODS} | {
    "triangle": ("blobs", "nucleus", 0.6),  # made for skewed histograms: over-segments
    "edges": ("blobs", "nucleus", 0.6),
    "region_growing": ("blobs", "nucleus", 0.6),
    "watershed": ("membranes", "membrane", 0.5),  # floods basins, lines on dark boundaries
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_segments_its_kind_of_image(name, blobs, membranes, tmp_path):
    data, cls, floor = CASES[name]
    definition = blobs if data == "blobs" else membranes
    written, search = run_classic(name, definition, "val", tmp_path / name, tune_images=6)
    assert len(written) == 4 and all(p.is_file() for p in written)
    assert len(search["trials"]) == np.prod([len(v) for v in METHODS[name].grid.values()])
    metrics, _ = evaluate_predictions(definition, "val", tmp_path / name)
    assert metrics["per_class"][cls]["iou"] > floor, metrics["per_class"]


def test_polarity_is_learned_from_labels(tmp_path):
    dark = load_definition(make_blobs(tmp_path / "dark", dark_objects=True))
    run_classic("otsu", dark, "val", tmp_path / "p")
    metrics, _ = evaluate_predictions(dark, "val", tmp_path / "p")
    assert metrics["per_class"]["nucleus"]["iou"] > 0.8


def test_mixed_polarity_is_normalised(tmp_path):
    """Bright-field and fluorescence in one set (dark objects on bright, bright on dark):
    one region -> class mapping fits both only after the dark_majority normalisation,
    which the grid search picks."""
    mixed = load_definition(make_blobs(tmp_path / "mixed", dark_objects="alternate"))
    _, search = run_classic("otsu", mixed, "val", tmp_path / "p")
    assert search["best"]["params"]["polarity"] == "dark_majority"
    metrics, _ = evaluate_predictions(mixed, "val", tmp_path / "p")
    assert metrics["per_class"]["nucleus"]["iou"] > 0.8
    kept = [t["mIoU"] for t in search["trials"] if t["params"]["polarity"] == "keep"]
    assert max(kept) < 0.6  # without it, one polarity's objects are always lost


def test_evaluate_predictions_matches_a_hand_count(blobs, tmp_path):
    run_classic("otsu", blobs, "val", tmp_path / "p")
    metrics, out = evaluate_predictions(blobs, "val", tmp_path / "p")
    cm = np.zeros((2, 2), np.int64)
    for stem in (f"val_{i:02d}" for i in range(4)):
        target = cv2.imread(str(blobs.root / "masks" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        pred = cv2.imread(str(tmp_path / "p" / f"{stem}_mask.png"), cv2.IMREAD_UNCHANGED)
        cm += confusion_matrix(target, pred, 2, blobs.ignore_index)
    assert metrics["mIoU"] == pytest.approx(metrics_from_confusion(cm, blobs.classes)["mIoU"])
    assert (out / "metrics.json").is_file() and (out / "per_class.csv").is_file()


def test_cli_classic_then_evaluate_and_bad_predictions(blobs, tmp_path):
    proc = run_cli("classic", "li", blobs.root, "--out", tmp_path / "li", "--tune-images", "4")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "li" / "classic.json").read_text())["best"]["params"]
    proc = run_cli("evaluate", blobs.root, "--predictions", tmp_path / "li", "--split", "val")
    assert proc.returncode == 0, proc.stderr
    assert "nucleus" in proc.stdout and "mIoU" in proc.stdout
    (tmp_path / "li" / "val_01_mask.png").unlink()
    proc = run_cli("evaluate", blobs.root, "--predictions", tmp_path / "li", "--split", "val")
    assert proc.returncode == 1 and "val_01_mask.png" in proc.stderr
    assert "Traceback" not in proc.stderr
    cv2.imwrite(str(tmp_path / "li" / "val_01_mask.png"), np.zeros((10, 10), np.uint8))
    proc = run_cli("evaluate", blobs.root, "--predictions", tmp_path / "li", "--split", "val")
    assert proc.returncode == 1 and "10x10" in proc.stderr
    proc = run_cli("classic", "kmeans", blobs.root)
    assert proc.returncode == 1 and "unknown classical method 'kmeans'" in proc.stderr


def test_cli_classic_on_an_unlabelled_split_and_bad_tune_images(tmp_path):
    root = make_isbi(tmp_path / "isbi")
    args = ("classic", "otsu", root, "--format", "isbi2012", "--split", "test")
    proc = run_cli(*args, "--out", tmp_path / "p")
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "p").glob("*_mask.png"))) == 30
    proc = run_cli(*args, "--out", tmp_path / "q", "--tune-images", "0")
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert len(errors) == 1 and "--tune-images 0" in errors[0]


def test_unknown_method_names_the_choices():
    with pytest.raises(Exception, match="otsu"):
        Classic("kmeans", 2, 255)


def test_one_large_image_does_not_outvote_the_rest():
    """Votes are per image: a big image whose bright side is background cannot flip the
    mapping that seven small images agree on."""
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(7):
        mask = np.zeros((64, 64), np.uint8)
        mask[20:40, 20:40] = 1
        samples.append((np.where(mask, 200, 30).astype(np.uint8)[..., None], mask))
    big_mask = np.zeros((512, 512), np.uint8)
    big_mask[:8, :8] = 1
    big = np.where(rng.random((512, 512)) < 0.7, 200, 30).astype(np.uint8)[..., None]
    samples.append((big, big_mask))
    c = Classic("otsu", 2, None)
    model = c._fit_params(samples, {"sigma": 0, "polarity": "keep"})
    assert list(model) == [0, 1]  # bright -> nucleus, as the small images say
