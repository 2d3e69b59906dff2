"""Readers for the Pascal VOC 2012, Cityscapes and ADE20K layouts, on tiny fixtures."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from seglab.config import DataConfig
from seglab.data.dataset import DatasetDefinition, SegDataset
from seglab.data.formats import voc_colormap
from seglab.errors import SeglabError

H, W = 16, 24


def _rgb(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    if path.suffix == ".jpg":
        Image.fromarray(img).save(path, quality=95)
    else:
        Image.fromarray(img).save(path)


def _index_png(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8), mode="L").save(path)


def _blocks(values: list[int]) -> np.ndarray:
    """An H x W mask of vertical stripes holding ``values`` left to right."""
    cols = np.array_split(np.arange(W), len(values))
    m = np.zeros((H, W), np.uint8)
    for v, c in zip(values, cols, strict=True):
        m[:, c] = v
    return m


def _definition(fmt: str, root: Path, **kw) -> DatasetDefinition:
    return DatasetDefinition.from_config(DataConfig(format=fmt, root=root, **kw))


# ----------------------------------------------------------------------------- VOC


def _palette_png(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(mask.astype(np.uint8), mode="P")
    im.putpalette([v for c in voc_colormap(256) for v in c])
    im.save(path)


VOC_MASKS = {
    "2007_000032": _blocks([0, 1, 15, 20]),
    "2007_000039": _blocks([0, 7, 12]),
    "2008_000123": _blocks([19, 0]),
}


def _voc(tmp_path: Path) -> Path:
    root = tmp_path / "VOCdevkit" / "VOC2012"
    for k, (i, m) in enumerate(VOC_MASKS.items()):
        m = m.copy()
        m[H // 2, :] = 255  # white object boundary
        _rgb(root / "JPEGImages" / f"{i}.jpg", k)
        _palette_png(root / "SegmentationClass" / f"{i}.png", m)
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    ids = list(VOC_MASKS)
    (sets / "train.txt").write_text("\n".join(ids[:2]) + "\n")
    (sets / "val.txt").write_text(ids[2] + "\n")
    (sets / "trainval.txt").write_text("\n".join(ids) + "\n")
    return root


def test_voc_palette_masks_give_indices_and_boundary_is_ignore(tmp_path):
    root = _voc(tmp_path)
    # the fixture really is a palette PNG whose colours differ from its indices
    im = Image.open(root / "SegmentationClass" / "2007_000032.png")
    assert im.mode == "P"
    assert cv2.imread(str(root / "SegmentationClass" / "2007_000032.png")).max() == 224
    d = _definition("voc", root)
    assert d.num_classes == 21 and d.ignore_index == 255
    assert d.classes[0] == "background" and d.classes[15] == "person"
    assert d.colors[1] == (128, 0, 0) and d.colors[15] == (192, 128, 128)
    assert len(d.pairs("train")) == 2 and len(d.pairs("val")) == 1
    assert len(d.pairs("trainval")) == 3
    ds = SegDataset(d, "trainval")
    for k, (i, expected) in enumerate(VOC_MASKS.items()):
        img, mask = ds.load(k)
        assert ds.pairs[k].image.name == f"{i}.jpg"
        assert img.shape == (H, W, 3) and img.dtype == np.uint8
        assert mask.shape == (H, W) and mask.dtype == np.uint8
        want = expected.copy()
        want[H // 2, :] = 255
        np.testing.assert_array_equal(mask, want)


def test_voc_accepts_grey_index_masks_and_the_devkit_folder(tmp_path):
    root = _voc(tmp_path)
    _index_png(root / "SegmentationClass" / "2008_000123.png", _blocks([3, 255]))
    d = _definition("voc", tmp_path / "VOCdevkit")
    _, mask = SegDataset(d, "val").load(0)
    np.testing.assert_array_equal(mask, _blocks([3, 255]))


def test_voc_sbd_augmented_set(tmp_path):
    root = _voc(tmp_path)
    aug = {"2007_000032": _blocks([5, 6]), "2011_003255": _blocks([0, 18, 255])}
    _rgb(root / "JPEGImages" / "2011_003255.jpg", 9)
    for i, m in aug.items():
        _index_png(root / "SegmentationClassAug" / f"{i}.png", m)
    # DeepLab's list style (image + mask paths) and bare ids both work
    (root / "ImageSets" / "Segmentation" / "train_aug.txt").write_text(
        "/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png\n2011_003255\n"
    )
    for d, split in (
        (_definition("voc", root), "train_aug"),
        (_definition("voc", root, splits={"train": "sbd"}), "train"),
    ):
        ds = SegDataset(d, split)
        assert len(ds) == 2
        assert all(it.mask.parent.name == "SegmentationClassAug" for it in ds.pairs)
        for k, want in enumerate(aug.values()):
            np.testing.assert_array_equal(ds.load(k)[1], want)


def test_voc_missing_list_file_is_named(tmp_path):
    root = _voc(tmp_path)
    d = _definition("voc", root)
    with pytest.raises(SeglabError, match=r"Segmentation[/\\]test\.txt"):
        SegDataset(d, "test")
    with pytest.raises(SeglabError, match="train_aug.txt"):
        SegDataset(d, "train_aug")


def test_voc_stray_label_value_is_reported(tmp_path):
    root = _voc(tmp_path)
    m = VOC_MASKS["2008_000123"].copy()
    m[0, 0] = 30
    _palette_png(root / "SegmentationClass" / "2008_000123.png", m)
    d = _definition("voc", root)
    with pytest.raises(SeglabError, match=r"2008_000123\.png has values 30 outside the 21"):
        SegDataset(d, "val")


# ----------------------------------------------------------------------- Cityscapes


def _cityscapes(tmp_path: Path) -> Path:
    root = tmp_path / "cityscapes"
    frames = {
        "train": [("aachen", "aachen_000000_000019"), ("bochum", "bochum_000000_000313")],
        "val": [("frankfurt", "frankfurt_000000_000294")],
        "test": [("berlin", "berlin_000000_000019"), ("bonn", "bonn_000000_000020")],
    }
    ids = {
        "aachen_000000_000019": [7, 8, 11, 26, 33],
        "bochum_000000_000313": [0, 1, 6, 9, 23],  # void ids, parking 9 -> ignore
        "frankfurt_000000_000294": [24, 25, 31, 29, 30],  # caravan/trailer -> ignore
        "berlin_000000_000019": [0],
    }
    for k, (split, items) in enumerate(frames.items()):
        for j, (city, base) in enumerate(items):
            _rgb(root / "leftImg8bit" / split / city / f"{base}_leftImg8bit.png", 10 * k + j)
            if base in ids:
                path = root / "gtFine" / split / city / f"{base}_gtFine_labelIds.png"
                _index_png(path, _blocks(ids[base]))
    return root


def test_cityscapes_maps_label_ids_to_train_ids(tmp_path):
    root = _cityscapes(tmp_path)
    d = _definition("cityscapes", root)
    assert d.num_classes == 19 and d.ignore_index == 255
    assert d.classes[:3] == ["road", "sidewalk", "building"] and d.classes[18] == "bicycle"
    assert d.colors[0] == (128, 64, 128) and d.colors[10] == (70, 130, 180)
    ds = SegDataset(d, "train")
    assert len(ds) == 2 and len(SegDataset(d, "val")) == 1
    img, mask = ds.load(0)
    assert img.shape == (H, W, 3) and img.dtype == np.uint8
    assert ds.pairs[0].image.parent.name == "aachen"
    np.testing.assert_array_equal(mask, _blocks([0, 1, 2, 13, 18]))
    np.testing.assert_array_equal(ds.load(1)[1], _blocks([255, 255, 255, 255, 10]))
    np.testing.assert_array_equal(SegDataset(d, "val").load(0)[1], _blocks([11, 12, 16, 255, 255]))


def test_cityscapes_full_lookup_table_matches_the_official_one():
    from seglab.data.formats.cityscapes import label_to_train_lut

    official = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10}
    official |= {24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
    lut = label_to_train_lut()
    assert lut.shape == (256,) and lut.dtype == np.uint8
    for label_id in range(256):
        assert lut[label_id] == official.get(label_id, 255), label_id


def test_cityscapes_test_split_lists_images_without_masks(tmp_path):
    root = _cityscapes(tmp_path)
    d = _definition("cityscapes", root)
    pairs = d.pairs("test")
    assert [p.image.parent.name for p in pairs] == ["berlin", "bonn"]
    assert pairs[0].mask is not None and pairs[1].mask is None
    with pytest.raises(SeglabError, match="has no masks"):
        SegDataset(d, "test")
    ds = SegDataset(d, "test", require_masks=False)
    assert (ds.load(0)[1] == 255).all() and ds.load(1)[1] is None


def test_cityscapes_missing_split_folder_is_named(tmp_path):
    root = _cityscapes(tmp_path)
    d = _definition("cityscapes", root)
    with pytest.raises(SeglabError, match=r"leftImg8bit[/\\]train_extra"):
        d.pairs("train_extra")
    bad = _definition("cityscapes", root, splits={"train": "gtMedium"})
    with pytest.raises(SeglabError, match="gtMedium"):
        bad.pairs("train")


# --------------------------------------------------------------------------- ADE20K


def _ade(tmp_path: Path) -> Path:
    root = tmp_path / "ADEChallengeData2016"
    masks = {
        ("training", "ADE_train_00000001"): _blocks([0, 1, 2, 150]),
        ("training", "ADE_train_00000002"): _blocks([13, 0]),
        ("training", "ADE_train_00000003"): _blocks([4, 5, 6]),
        ("validation", "ADE_val_00000001"): _blocks([0, 100, 149]),
    }
    for k, ((folder, stem), m) in enumerate(masks.items()):
        _rgb(root / "images" / folder / f"{stem}.jpg", k)
        _index_png(root / "annotations" / folder / f"{stem}.png", m)
    return root


def test_ade20k_reduces_zero_label(tmp_path):
    root = _ade(tmp_path)
    d = _definition("ade20k", root)
    assert d.num_classes == 150 and d.ignore_index == 255
    assert d.classes[:5] == ["wall", "building", "sky", "floor", "tree"]
    assert d.classes[-1] == "flag" and len(set(d.colors)) == 150
    train = SegDataset(d, "train")
    assert len(train) == 3 and len(SegDataset(d, "val")) == 1
    assert len(d.pairs("training")) == 3 and len(d.pairs("validation")) == 1
    img, mask = train.load(0)
    assert img.shape == (H, W, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(mask, _blocks([255, 0, 1, 149]))
    np.testing.assert_array_equal(train.load(1)[1], _blocks([12, 255]))
    np.testing.assert_array_equal(SegDataset(d, "val").load(0)[1], _blocks([255, 99, 148]))
    # the parent folder of ADEChallengeData2016 works too
    assert len(_definition("ade20k", tmp_path).pairs("val")) == 1


def test_ade20k_missing_folder_and_stray_value(tmp_path):
    root = _ade(tmp_path)
    d = _definition("ade20k", root)
    with pytest.raises(SeglabError, match=r"images[/\\]testing"):
        d.pairs("test")
    _index_png(root / "annotations" / "validation" / "ADE_val_00000001.png", _blocks([0, 151]))
    with pytest.raises(SeglabError, match="ADE_val_00000001.png has values 150 outside"):
        SegDataset(d, "val")
    (root / "annotations" / "validation" / "ADE_val_00000001.png").unlink()
    with pytest.raises(SeglabError, match="ADE_val_00000001.png is missing"):
        SegDataset(d, "val")
