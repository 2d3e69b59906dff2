"""Data tools: statistics, stratified splits and conversion to the folder layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from conftest import shared_dataset

from seglab.config import DataConfig, load_config
from seglab.data import convert
from seglab.data.convert import convert_dataset
from seglab.data.dataset import (
    DatasetDefinition,
    SegDataset,
    class_weights_from,
    inverse_log_weights,
)
from seglab.data.split import make_splits, split_sizes, write_splits
from seglab.data.stats import dataset_stats, write_stats
from seglab.data.synthetic import CLASSES, make_dataset
from seglab.errors import SeglabError


def _definition(root: Path, classes: list[str] = CLASSES, fmt: str = "folder", **kw):
    return DatasetDefinition.from_config(DataConfig(format=fmt, root=root, classes=classes, **kw))


@pytest.fixture
def synth(tmp_path) -> Path:
    """A small synthetic set with one odd-sized image and a few ignore (255) pixels."""
    root = make_dataset(tmp_path / "synth", n_train=8, n_val=4, n_test=4, size=(32, 48), seed=3)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    mask = np.zeros((24, 40), np.uint8)
    mask[5:15, 10:30] = 2
    mask[0, :7] = 255
    cv2.imwrite(str(root / "images" / "odd.png"), img)
    cv2.imwrite(str(root / "masks" / "odd.png"), mask)
    with open(root / "train.txt", "a") as f:
        f.write("odd\n")
    m = cv2.imread(str(root / "masks" / "val_0008.png"), cv2.IMREAD_UNCHANGED)
    m[:3, :5] = 255
    cv2.imwrite(str(root / "masks" / "val_0008.png"), m)
    return root


def _read_split(root: Path, split: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    stems = (root / f"{split}.txt").read_text().split()
    imgs = [cv2.imread(str(root / "images" / f"{s}.png"))[..., ::-1] for s in stems]
    masks = [cv2.imread(str(root / "masks" / f"{s}.png"), cv2.IMREAD_UNCHANGED) for s in stems]
    return imgs, masks


def test_stats_match_numpy_on_synthetic(synth, tmp_path):
    d = _definition(synth)
    calls = []
    stats = dataset_stats(d, progress=lambda *a: calls.append(a))
    assert list(stats["splits"]) == ["train", "val", "test"]
    assert calls[-1] == ("stats test", 17, 17)
    for split in ("train", "val", "test"):
        _, masks = _read_split(synth, split)
        bc = sum(np.bincount(m.ravel(), minlength=256) for m in masks)
        s = stats["splits"][split]
        assert s["class_pixels"] == bc[:4].tolist()
        assert s["ignore_pixels"] == int(bc[255])
        assert s["labelled_pixels"] == int(bc[:4].sum())
        assert np.allclose(s["class_frequency"], bc[:4] / bc[:4].sum())
        assert s["class_images"] == [sum(int((m == c).any()) for m in masks) for c in range(4)]
    assert stats["splits"]["train"]["ignore_pixels"] == 7
    assert stats["splits"]["val"]["ignore_pixels"] == 15
    sizes = stats["splits"]["train"]["image_sizes"]
    assert sizes["histogram"] == {"48x32": 8, "40x24": 1}
    assert sizes["height"] == {"min": 24, "median": 32.0, "max": 32}
    assert sizes["width"] == {"min": 40, "median": 48.0, "max": 48}
    assert stats["image_sizes"]["histogram"] == {"48x32": 16, "40x24": 1}

    imgs, masks = _read_split(synth, "train")
    px = np.concatenate([i.reshape(-1, 3) for i in imgs]).astype(np.float64)
    assert np.allclose(stats["mean"], px.mean(0), atol=1e-3)
    assert np.allclose(stats["std"], px.std(0), atol=1e-3)
    want = class_weights_from(SegDataset(d, "train"))
    assert np.allclose(stats["class_weights"]["median_frequency"], want)
    # training's inverse_log weights (loss.class_weights: inverse_log) are the ones stats suggest
    want = class_weights_from(SegDataset(d, "train"), "inverse_log")
    assert np.allclose(stats["class_weights"]["inverse_log"], want)
    p = np.asarray(stats["splits"]["train"]["class_frequency"])
    assert np.allclose(stats["class_weights"]["inverse_log"], 1 / np.log(1.02 + p))
    # rarer classes get larger inverse-log weights
    order = np.argsort(p)
    assert np.all(np.diff(np.asarray(stats["class_weights"]["inverse_log"])[order]) <= 0)

    files = write_stats(stats, tmp_path / "out")
    assert [f.name for f in files] == ["stats.json", "class_frequency.png"]
    assert json.loads(files[0].read_text()) == json.loads(json.dumps(stats))
    png = cv2.imread(str(files[1]))
    assert png is not None and png.shape[0] > 100 and png.std() > 0


def test_stats_skips_missing_splits_and_mean_std_usable(synth):
    (synth / "test.txt").unlink()
    d = _definition(synth)
    stats = dataset_stats(d)
    assert list(stats["splits"]) == ["train", "val"] and "test" in stats["skipped_splits"]
    d2 = _definition(synth, mean=stats["mean"], std=stats["std"])
    assert d2.mean == stats["mean"]
    with pytest.raises(SeglabError, match="split 'test'"):
        dataset_stats(d, splits=["test"])


def test_inverse_log_weights_bounds():
    w = inverse_log_weights(np.array([98, 2, 0]))
    assert np.allclose(w, 1 / np.log(1.02 + np.array([0.98, 0.02, 0.0])))
    assert w[2] == pytest.approx(1 / np.log(1.02))


def test_stats_on_isbi2012():
    root = shared_dataset("isbi2012")
    d = DatasetDefinition.from_config(DataConfig(format="isbi2012", root=root))
    stats = dataset_stats(d, splits=["train", "val", "test"])
    assert stats["splits"]["test"]["labelled"] == 0 and stats["splits"]["test"]["images"] == 30
    masks = [cv2.imread(str(root / f"train/masks/{i:02d}.png"), 0) for i in range(24)]
    imgs = [cv2.imread(str(root / f"train/images/{i:02d}.png"), 0) for i in range(24)]
    bc = sum(np.bincount(m.ravel(), minlength=256) for m in masks)
    assert stats["splits"]["train"]["class_pixels"] == bc[:2].tolist()
    assert stats["splits"]["train"]["image_sizes"]["histogram"] == {"512x512": 24}
    px = np.stack(imgs).astype(np.float64)
    assert stats["mean"] == pytest.approx([px.mean()], abs=1e-3)
    assert stats["std"] == pytest.approx([px.std()], abs=1e-3)
    want = class_weights_from(SegDataset(d, "train", cache=False))
    assert np.allclose(stats["class_weights"]["median_frequency"], want)


@pytest.fixture
def rare(tmp_path) -> Path:
    """30 synthetic images without split lists; class 4 ('rare') planted in 3 of them."""
    root = make_dataset(tmp_path / "rare", n_train=30, n_val=0, n_test=0, size=(32, 32), seed=5)
    for name in ("train.txt", "val.txt", "test.txt"):
        (root / name).unlink()
    for stem in ("train_0003", "train_0017", "train_0029"):
        p = root / "masks" / f"{stem}.png"
        m = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        m[:4, :4] = 4
        cv2.imwrite(str(p), m)
    return root


def test_split_sizes_largest_remainder():
    assert split_sizes(30, (0.7, 0.15, 0.15)) == [21, 5, 4]
    assert split_sizes(3, (0.9, 0.05, 0.05)) == [1, 1, 1]
    assert split_sizes(10, (1, 0, 0)) == [10, 0, 0]
    with pytest.raises(SeglabError, match="fractions"):
        split_sizes(10, (0.5, -0.5, 1))


def test_splits_stratified_and_reproducible(rare):
    d = _definition(rare, classes=[*CLASSES, "rare"])
    a = make_splits(d, seed=0)
    assert a == make_splits(d, seed=0)
    b = make_splits(d, seed=1)
    assert a != b
    all_stems = sorted(p.stem for p in (rare / "images").iterdir())
    for s in (a, b):
        assert sorted(sum(s.values(), [])) == all_stems
        assert [len(v) for v in s.values()] == [21, 5, 4]
        for split, stems in s.items():
            present = set()
            for st in stems:
                m = cv2.imread(str(rare / "masks" / f"{st}.png"), cv2.IMREAD_UNCHANGED)
                present |= set(np.unique(m).tolist())
            assert present == {0, 1, 2, 3, 4}, (split, present)
        rare_in = {
            k: [x for x in v if x in ("train_0003", "train_0017", "train_0029")]
            for k, v in s.items()
        }
        assert [len(v) for v in rare_in.values()] == [1, 1, 1]
    # the (stem, mask path) form gives the same splits
    pairs = [(st, rare / "masks" / f"{st}.png") for st in all_stems]
    assert make_splits(pairs, seed=1) == b


def test_write_splits_feed_the_folder_format(rare):
    d = _definition(rare, classes=[*CLASSES, "rare"])
    splits = make_splits(d, fractions=(0.6, 0.2, 0.2), seed=3)
    paths = write_splits(splits, rare)
    assert [p.name for p in paths] == ["train.txt", "val.txt", "test.txt"]
    for split, stems in splits.items():
        ds = SegDataset(d, split, cache=False)
        assert [it.image.stem for it in ds.pairs] == stems
    before = paths[0].read_text()
    with pytest.raises(SeglabError, match="already exists"):
        write_splits(make_splits(d, seed=4), rare)
    assert paths[0].read_text() == before


def _assert_same(src: DatasetDefinition, dst: DatasetDefinition, split: str, n: int | None = None):
    a = SegDataset(src, split, cache=False)
    b = SegDataset(dst, split, cache=False)
    count = len(a) if n is None else n
    assert len(b) == count
    for i in range(count):
        ia, ma = a.load(i)
        ib, mb = b.load(i)
        assert np.array_equal(ia, ib) and np.array_equal(ma, mb)


def test_convert_synthetic_round_trip(synth, tmp_path):
    # one BMP image: re-encoded as PNG; the PNGs and TIFFs are copied byte for byte
    img = cv2.imread(str(synth / "images" / "train_0000.png"))
    cv2.imwrite(str(synth / "images" / "train_0000.bmp"), img)
    (synth / "images" / "train_0000.png").unlink()
    cv2.imwrite(str(synth / "images" / "train_0001.tif"), img)
    (synth / "images" / "train_0001.png").unlink()
    d = _definition(synth)
    out = tmp_path / "converted"
    out.mkdir()  # an empty folder is fine
    yaml_path = convert_dataset(d, out)
    assert yaml_path == out / "dataset.yaml"
    cfg = load_config(yaml_path)
    assert cfg.data.root == out and cfg.data.format == "folder"
    d2 = DatasetDefinition.from_config(cfg.data)
    assert (d2.classes, d2.colors, d2.ignore_index, d2.in_channels) == (
        d.classes,
        d.colors,
        d.ignore_index,
        d.in_channels,
    )
    for split in ("train", "val", "test"):
        _assert_same(d, d2, split)
    assert (out / "images" / "train_0000.png").is_file()
    tif = (synth / "images" / "train_0001.tif").read_bytes()
    assert (out / "images" / "train_0001.tif").read_bytes() == tif
    src = (synth / "images" / "val_0008.png").read_bytes()
    assert (out / "images" / "val_0008.png").read_bytes() == src
    assert not list(tmp_path.glob(".converted*"))


def test_convert_camvid_val_subset(tmp_path):
    root = shared_dataset("camvid")
    d = DatasetDefinition.from_config(DataConfig(format="camvid", root=root))
    yaml_path = convert_dataset(d, tmp_path / "cv", splits=["val"], limit=10)
    d2 = DatasetDefinition.from_config(load_config(yaml_path).data)
    assert d2.classes == d.classes and d2.ignore_index == 11
    assert sorted(p.name for p in (tmp_path / "cv").iterdir()) == [
        "dataset.yaml",
        "images",
        "masks",
        "val.txt",
    ]
    _assert_same(d, d2, "val", 10)


def test_convert_renames_shared_stems(tmp_path):
    """CamVid-like layout whose train and val folders hold different images named a.png."""
    root = tmp_path / "cam"
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        cv2.imwrite(str(root / split / "a.png"), rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
        cv2.imwrite(str(root / f"{split}annot" / "a.png"), rng.integers(0, 11, (8, 8), np.uint8))
    d = DatasetDefinition.from_config(DataConfig(format="camvid", root=root))
    out = tmp_path / "out"
    d2 = DatasetDefinition.from_config(load_config(convert_dataset(d, out)).data)
    assert (out / "train.txt").read_text() == "a\n"
    assert (out / "val.txt").read_text() == "val_a\n"
    _assert_same(d, d2, "train")
    _assert_same(d, d2, "val")


def test_convert_two_classes_keeps_ignored_pixels(tmp_path):
    """2 classes, ignore_index 255: a converted mask holding only class 0 and ignored pixels
    must not read back as a 0/255 binary mask (0/1); the copy uses ignore_index 254."""
    root = tmp_path / "src"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.csv").write_text("bg,0,0,0\nfg,255,255,255\nignore,255,0,0\n")
    cv2.imwrite(str(root / "images" / "a.png"), np.full((8, 8, 3), 90, np.uint8))
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[:2] = (255, 0, 0)  # ignore colour
    cv2.imwrite(str(root / "masks" / "a.png"), rgb[..., ::-1])
    d = DatasetDefinition.from_config(DataConfig(format="folder", root=root))
    assert (d.num_classes, d.ignore_index) == (2, 255)
    d2 = DatasetDefinition.from_config(load_config(convert_dataset(d, tmp_path / "out")).data)
    _, mask = SegDataset(d2, "train", cache=False).load(0)
    assert np.unique(mask[:2]).tolist() == [d2.ignore_index] and not mask[2:].any()
    assert d2.ignore_index == 254


def test_convert_multichannel_tiff(tmp_path, monkeypatch):
    """A 5-channel TIFF (PNG holds at most 4) is copied byte for byte; an image that cannot
    be written as PNG is a one-line error naming it, and nothing is left behind."""
    root = tmp_path / "src"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    c5 = np.random.default_rng(0).integers(0, 256, (8, 8, 5), dtype=np.uint8)
    tifffile.imwrite(root / "images" / "a.tif", c5, photometric="minisblack", planarconfig="contig")
    cv2.imwrite(str(root / "masks" / "a.png"), np.ones((8, 8), np.uint8))
    kw = {"classes": ["a", "b"], "in_channels": 5, "mean": [0.0] * 5, "std": [1.0] * 5}
    d = _definition(root, **kw)
    out = tmp_path / "out"
    d2 = DatasetDefinition.from_config(load_config(convert_dataset(d, out)).data)
    assert (out / "images" / "a.tif").read_bytes() == (root / "images" / "a.tif").read_bytes()
    _assert_same(d, d2, "train")
    # re-encoded as PNG instead (as before the fix), the write failure names the image
    monkeypatch.delitem(convert.COPY_SUFFIXES, ".tif")
    with pytest.raises(SeglabError, match=r"cannot write .*a\.tif as PNG \(5 channels"):
        convert_dataset(d, tmp_path / "o2")
    assert not list(tmp_path.glob("*o2*"))
    assert not list(tmp_path.glob("*o2*"))


def test_convert_refuses_non_empty_output_and_leaves_nothing_on_error(synth, tmp_path):
    d = _definition(synth)
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(SeglabError, match=f"output folder {out} is not empty"):
        convert_dataset(d, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    # a bad mask half-way: the error names it and no partial output remains
    m = cv2.imread(str(synth / "masks" / "val_0009.png"), cv2.IMREAD_UNCHANGED)
    m[0, 0] = 9
    cv2.imwrite(str(synth / "masks" / "val_0009.png"), m)
    fresh = tmp_path / "fresh"
    with pytest.raises(SeglabError, match="val_0009.png has values 9"):
        convert_dataset(d, fresh)
    assert not fresh.exists() and not list(tmp_path.glob(".fresh*"))


def test_split_refuses_layouts_that_would_not_read_the_lists(tmp_path, synth):
    """`seglab data split` writes <root>/<split>.txt stem lists; a layout that reads its
    splits another way (CamVid's IMAGE MASK lines, images/<split>/ sub-folders) would ignore
    or misread them: a one-line error pointing at `seglab data convert`, nothing written."""
    camvid = tmp_path / "camvid"
    (camvid / "train").mkdir(parents=True)
    with pytest.raises(SeglabError, match="camvid layout .* does not read split lists; convert"):
        make_splits(DatasetDefinition.from_config(DataConfig(format="camvid", root=camvid)))
    nested = tmp_path / "nested"
    for sub in ("images", "masks"):
        (nested / sub / "train").mkdir(parents=True)
        for p in sorted((synth / sub).glob("train_*.png")):
            shutil.copy(p, nested / sub / "train" / p.name)
    d = _definition(nested)
    assert len(SegDataset(d, "train", cache=False)) == 8
    with pytest.raises(SeglabError, match=r"holds no images \(split sub-folders\?\)"):
        make_splits(d)
    assert not list(nested.glob("*.txt"))
