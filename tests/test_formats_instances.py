"""COCO and DSB 2018 readers: semantic masks, instance maps, bad annotations, training."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import shared_dataset, tiny_config
from pycocotools.coco import COCO

from seglab.config import DataConfig, config_from_dict
from seglab.data.dataset import DatasetDefinition, SegDataset
from seglab.data.formats import coco as coco_fmt
from seglab.data.formats import dsb2018
from seglab.errors import SeglabError

# --------------------------------------------------------------------------- COCO, real data


def _reference_masks(coco: COCO, image_id: int) -> tuple[np.ndarray, list, list[np.ndarray]]:
    """Semantic mask built straight from pycocotools: sorted category ids -> 1..K, crowd ->
    255, annotations painted by decreasing area (ties in JSON order)."""
    index = {c: i + 1 for i, c in enumerate(sorted(coco.getCatIds()))}
    info = coco.loadImgs(image_id)[0]
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=None))
    masks = [coco.annToMask(a) > 0 for a in anns]
    ref = np.zeros((info["height"], info["width"]), dtype=np.uint8)
    for i in sorted(range(len(anns)), key=lambda i: -int(masks[i].sum())):
        ref[masks[i]] = 255 if anns[i]["iscrowd"] else index[anns[i]["category_id"]]
    return ref, anns, masks


def test_coco_semantic_masks_match_pycocotools_reference():
    root = shared_dataset("tiny_coco")
    d = DatasetDefinition.from_config(DataConfig(format="coco", root=root))
    assert d.num_classes == 81 and d.classes[0] == "background" and d.classes[1] == "person"
    assert coco_fmt.dataset_classes(root) == d.classes  # the JSON's names = the defaults here
    ds = SegDataset(d, "val", cache=False)
    assert len(ds) == 50
    coco = COCO(str(root / "annotations" / "instances_val2017.json"))
    crowd_pixels = 0
    for i, item in enumerate(ds.pairs):
        assert item.image.parent == root / "val2017" and item.image.is_file()
        image, mask = ds.load(i)
        ref, anns, masks = _reference_masks(coco, item.ref)
        assert image.shape[:2] == mask.shape
        np.testing.assert_array_equal(mask, ref, err_msg=f"image {item.ref}")
        for a, m in zip(anns, masks, strict=True):
            if a["iscrowd"]:
                smaller = [mm for aa, mm in zip(anns, masks, strict=True) if mm.sum() < m.sum()]
                visible = m & ~np.any(smaller, axis=0) if smaller else m
                assert (mask[visible] == 255).all()
                crowd_pixels += int(visible.sum())
        inst = coco_fmt.read_instances(item, d)
        assert inst.dtype == np.int32 and inst.shape == mask.shape
        expected = sum(1 for a, m in zip(anns, masks, strict=True) if not a["iscrowd"] and m.any())
        ids = np.unique(inst)
        np.testing.assert_array_equal(ids[ids > 0], np.arange(1, expected + 1))
        assert not (inst[mask == 0] > 0).any()  # instances only where some object is
    assert crowd_pixels > 0  # tiny_coco val has crowd regions: they were checked


def test_coco_train_split_and_clean_annotations():
    root = shared_dataset("tiny_coco")
    items = coco_fmt.list_split(root, "train2017")
    assert len(items) == 50 and items == coco_fmt.list_split(root, "train")
    assert all(it.image.parent == root / "train2017" for it in items)
    probs = coco_fmt.annotation_problems(root, "val")
    assert probs["image_without_annotations"] == 2
    assert sum(probs.values()) == 2  # the official annotations are otherwise clean
    assert coco_fmt.load_coco(items[0].mask) is coco_fmt.load_coco(items[0].mask)  # cached


# --------------------------------------------------------------------------- COCO, bad data


def _square(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


@pytest.fixture
def bad_coco(tmp_path: Path) -> Path:
    """3 images (20 x 30); categories 3 'car' and 7 'train' (non-contiguous ids)."""
    (tmp_path / "val2017").mkdir()
    (tmp_path / "annotations").mkdir()
    images = []
    for k, name in enumerate(["a.png", "b.png", "c.png"], start=1):
        cv2.imwrite(str(tmp_path / "val2017" / name), np.full((20, 30, 3), 40 * k, np.uint8))
        images.append({"id": k, "file_name": name, "height": 20, "width": 30})
    anns = [
        # image 1: a small car listed before the large train that contains it
        {"image_id": 1, "category_id": 3, "segmentation": [_square(12, 4, 16, 8)]},
        {"image_id": 1, "category_id": 7, "segmentation": [_square(10, 2, 25, 15)]},
        # polygon partly outside the image -> clipped to its top-left corner
        {"image_id": 1, "category_id": 3, "segmentation": [_square(-10, -10, 5, 5)]},
        # image 2: zero-area box whose polygon is degenerate
        {
            "image_id": 2,
            "category_id": 3,
            "bbox": [5, 5, 0, 0],
            "segmentation": [[5, 5, 5, 5, 5, 5]],
        },
        # a 2-point polygon (pycocotools would read a 4-value polygon as a box)
        {"image_id": 2, "category_id": 7, "segmentation": [[1, 1, 4, 4]]},
        # absurdly far away: cut geometrically (to nothing) before rasterising
        {"image_id": 2, "category_id": 3, "segmentation": [[1e9, 1e9, 2e9, 1e9, 1e9, 2e9]]},
        # unknown category, malformed RLE
        {"image_id": 2, "category_id": 99, "segmentation": [_square(0, 0, 3, 3)]},
        {"image_id": 2, "category_id": 3, "segmentation": {"size": [20, 30], "counts": "@@"}},
        # a crowd region (uncompressed RLE): rows 15..19 of columns 0..4 -> ignore
        {
            "image_id": 2,
            "category_id": 3,
            "iscrowd": 1,
            "segmentation": {"size": [20, 30], "counts": [15, 5, 15, 5, 15, 5, 15, 5, 15, 5, 500]},
        },
    ]
    for i, a in enumerate(anns, start=1):
        a.setdefault("iscrowd", 0)
        a["id"] = i
    cats = [{"id": 7, "name": "train"}, {"id": 3, "name": "car"}]
    data = {"images": images, "annotations": anns, "categories": cats}
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    return tmp_path


def test_coco_bad_annotations_are_clipped_skipped_and_counted(bad_coco: Path):
    assert coco_fmt.annotation_problems(bad_coco, "val") == {
        "polygon_outside_image": 2,
        "zero_area_box": 1,
        "short_polygon": 1,
        "empty_mask": 2,  # the far polygon and the degenerate polygon of the zero-area box
        "unknown_category": 1,
        "bad_segmentation": 1,
        "missing_key": 0,
        "image_without_annotations": 1,
    }
    classes = coco_fmt.dataset_classes(bad_coco)
    assert classes == ["background", "car", "train"]  # sorted ids 3, 7 -> 1, 2
    d = DatasetDefinition.from_config(DataConfig(format="coco", root=bad_coco, classes=classes))
    ds = SegDataset(d, "val")  # decodes all three images: no exception
    a, b, c = (ds.load(i)[1] for i in range(3))
    assert (c == 0).all()  # no annotations: all background
    assert (a[0:5, 0:5] == 1).all()  # clipped polygon
    assert (a[4:8, 12:16] == 1).all()  # small car stays on top of the large train
    assert (a[10:15, 20:25] == 2).all()
    assert set(np.unique(b)) == {0, 255} and (b[15:20, 0:5] == 255).all()  # only crowd kept
    inst = coco_fmt.read_instances(ds.pairs[0], d)
    assert set(np.unique(inst)) == {0, 1, 2, 3}  # three usable objects in JSON order
    assert inst[5, 13] == 1 and inst[12, 22] == 2 and inst[0, 0] == 3
    assert (coco_fmt.read_instances(ds.pairs[1], d) == 0).all()  # crowd is no instance


def test_coco_entries_without_ids(bad_coco: Path):
    """Annotations without id / image_id / category_id are dropped and counted; images and
    categories without an id are refused naming the file and the entry."""
    f = bad_coco / "annotations" / "instances_val2017.json"
    data = json.loads(f.read_text())
    good = {"image_id": 3, "category_id": 3, "segmentation": [_square(0, 0, 9, 9)], "id": 50}
    for key in ("id", "image_id", "category_id"):
        data["annotations"].append({k: v for k, v in good.items() if k != key})
    f.write_text(json.dumps(data))
    problems = coco_fmt.annotation_problems(bad_coco, "val")
    assert problems["missing_key"] == 3 and problems["image_without_annotations"] == 1
    d = DatasetDefinition.from_config(DataConfig(format="coco", root=bad_coco))
    assert (SegDataset(d, "val").load(2)[1] == 0).all()  # image 3 keeps no annotation
    for kind in ("images", "categories"):
        broken = json.loads(json.dumps(data))
        del broken[kind][1]["id"]
        f.write_text(json.dumps(broken))
        with pytest.raises(SeglabError, match=rf"instances_val2017.json: {kind}\[1\].*no 'id'"):
            coco_fmt.load_coco(f)


def test_coco_classes_must_match_the_json(bad_coco: Path):
    """The JSON decides the indices: 81 COCO names are refused for a 2-category JSON."""
    cfg = DataConfig(format="coco", root=bad_coco, classes=coco_fmt.DEFAULTS.classes)
    d = DatasetDefinition.from_config(cfg)
    with pytest.raises(SeglabError, match="2 categories.*set data.classes to background"):
        SegDataset(d, "val")
    # names given in data.classes only relabel the JSON's indices
    d = DatasetDefinition.from_config(
        DataConfig(format="coco", root=bad_coco, classes=["bg", "auto", "zug"])
    )
    assert SegDataset(d, "val").load(0)[1].max() == 2


def test_instance_coco_classes_must_match_the_json(bad_coco: Path):
    from seglab.instance.data import InstanceDataset

    cfg = DataConfig(format="coco", root=bad_coco, classes=["background", "car"])
    with pytest.raises(SeglabError, match="instances_val2017.json has 2 categories"):
        InstanceDataset(DatasetDefinition.from_config(cfg), "val")
    cfg = DataConfig(format="coco", root=bad_coco, classes=["bg", "auto", "zug"])
    assert len(InstanceDataset(DatasetDefinition.from_config(cfg), "val")) == 3


def test_coco_spec_names_another_annotation_file(bad_coco: Path, tmp_path: Path):
    ann = json.loads((bad_coco / "annotations" / "instances_val2017.json").read_text())
    ann["images"] = ann["images"][:1]
    sub = tmp_path / "subset" / "instances_val2017.json"
    sub.parent.mkdir()
    sub.write_text(json.dumps(ann))
    items = coco_fmt.list_split(bad_coco, "train", str(sub))  # absolute spec
    assert [it.ref for it in items] == [1] and items[0].image == bad_coco / "val2017" / "a.png"
    with pytest.raises(SeglabError, match="data.splits"):
        coco_fmt.list_split(bad_coco, "train", "annotations/missing.json")


# --------------------------------------------------------------------------- DSB 2018


def test_dsb2018_shared_layout_masks_and_instances():
    root = shared_dataset("dsb2018")
    assert dsb2018.layout(root) == "shared"
    d = DatasetDefinition.from_config(DataConfig(format="dsb2018", root=root))
    assert d.classes == ["background", "nucleus"] and d.in_channels == 3
    assert len(d.pairs("train")) == 347 and len(d.pairs("val")) == 87
    ds = SegDataset(d, "val", cache=False)
    for i in (0, 1, 40, 86):
        image, mask = ds.load(i)
        assert image.shape == (*mask.shape, 3)
        assert set(np.unique(mask)) == {0, 1}
        inst = dsb2018.read_instances(ds.pairs[i], d)
        assert inst.dtype == np.int32 and inst.max() >= 1
        np.testing.assert_array_equal(inst > 0, mask == 1)


def _disk(shape: tuple[int, int], cy: int, cx: int, r: int) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    cv2.circle(m, (cx, cy), r, 255, -1)
    return m


@pytest.fixture
def kaggle_root(tmp_path: Path) -> Path:
    """Two ids, RGBA 24 x 32 images, three nucleus masks each (0/255), two overlapping."""
    root = tmp_path / "stage1_train"
    for n, id_ in enumerate(["0a1b", "ff02"]):
        (root / id_ / "images").mkdir(parents=True)
        (root / id_ / "masks").mkdir()
        rgba = np.full((24, 32, 4), 255, np.uint8)
        rgba[..., :3] = 30 * (n + 1)
        cv2.imwrite(str(root / id_ / "images" / f"{id_}.png"), rgba)
        for k, (cy, cx) in enumerate([(5, 5), (12, 20), (14, 24)]):
            cv2.imwrite(str(root / id_ / "masks" / f"m{k}.png"), _disk((24, 32), cy, cx, 3))
    return root


def test_dsb2018_kaggle_layout_union_and_instances(kaggle_root: Path):
    assert dsb2018.layout(kaggle_root) == "kaggle"
    d = DatasetDefinition.from_config(DataConfig(format="dsb2018", root=kaggle_root))
    ds = SegDataset(d, "train")
    assert [it.ref for it in ds.pairs] == ["0a1b", "ff02"]
    for i, item in enumerate(ds.pairs):
        image, mask = ds.load(i)
        assert image.shape == (24, 32, 3)  # alpha dropped
        union = np.zeros((24, 32), bool)
        for p in sorted((item.mask).glob("*.png")):
            union |= cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) > 0
        np.testing.assert_array_equal(mask, union.astype(np.uint8))
        inst = dsb2018.read_instances(item, d)
        assert set(np.unique(inst)) == {0, 1, 2, 3}
        np.testing.assert_array_equal(inst > 0, union)
        assert inst[14, 24] == 3 and inst[12, 20] == 2  # the later file wins the overlap
    (kaggle_root.parent / "one.txt").write_text("ff02.png\n")
    items = dsb2018.list_split(kaggle_root, "val", str(kaggle_root.parent / "one.txt"))
    assert [it.ref for it in items] == ["ff02"]
    assert dsb2018.list_split(kaggle_root, "val") == []  # no val list: nothing


def test_dsb2018_errors_name_the_file(kaggle_root: Path, tmp_path: Path):
    (tmp_path / "bad.txt").write_text("0a1b\nnope\n")
    with pytest.raises(SeglabError, match="bad.txt.*'nope'"):
        dsb2018.list_split(kaggle_root, "train", str(tmp_path / "bad.txt"))
    with pytest.raises(SeglabError, match="neither images/"):
        dsb2018.layout(tmp_path / "subset_missing")


# --------------------------------------------------------------------------- training


def _train_tiny(root: Path, fmt: str, tmp: Path, splits: dict, monkeypatch) -> Path:
    from seglab.training.train import RUN_ENV, train

    # train() records its run directory in the environment (for DDP workers); start afresh
    monkeypatch.setenv(RUN_ENV, "")
    cfg = tiny_config(
        root,
        data={"format": fmt, "root": str(root), "classes": None, "splits": splits},
        augment={"crop": [64, 64], "hflip": 0.5},
        train={"epochs": 1, "batch_size": 4, "num_workers": 0},
        inference={"scale": 0.25, "batch_size": 4},
    )
    t0 = time.monotonic()
    run = train(config_from_dict(cfg), tmp / "runs")
    print(f"{fmt} training run: {time.monotonic() - t0:.1f} s")
    assert (run / "checkpoints" / "best.ckpt").is_file()
    rows = json.loads((run / "metrics.json").read_text())
    assert len(rows) == 1 and isinstance(rows[0]["val_mIoU"], float)
    return run


def _coco_subset(src: Path, dst: Path, n: int) -> str:
    """The first ``n`` images of annotation file ``src`` (and their annotations) at ``dst``."""
    data = json.loads(src.read_text())
    data["images"] = data["images"][:n]
    keep = {im["id"] for im in data["images"]}
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    dst.parent.mkdir(parents=True)
    dst.write_text(json.dumps(data))
    return str(dst)


def test_coco_native_layout_trains(tmp_path: Path, monkeypatch):
    """The COCO JSONs train directly; data.splits names (absolute) subset JSONs whose names
    lead to the train2017/ and val2017/ image folders."""
    root = shared_dataset("tiny_coco")
    ann = root / "annotations"
    splits = {
        "train": _coco_subset(
            ann / "instances_train2017.json", tmp_path / "t" / "instances_train2017.json", 12
        ),
        "val": _coco_subset(
            ann / "instances_val2017.json", tmp_path / "v" / "instances_val2017.json", 8
        ),
    }
    run = _train_tiny(root, "coco", tmp_path, splits, monkeypatch)
    rows = json.loads((run / "metrics.json").read_text())
    assert len(rows[0]["val_iou"]) == 81


def test_dsb2018_native_layout_trains(tmp_path: Path, monkeypatch):
    root = shared_dataset("dsb2018")
    train_ids = (root / "train.txt").read_text().split()[:8]
    val_ids = (root / "val.txt").read_text().split()[:4]
    (tmp_path / "few_train.txt").write_text("\n".join(train_ids))
    (tmp_path / "few_val.txt").write_text("\n".join(val_ids))
    splits = {"train": str(tmp_path / "few_train.txt"), "val": str(tmp_path / "few_val.txt")}
    run = _train_tiny(root, "dsb2018", tmp_path, splits, monkeypatch)
    rows = json.loads((run / "metrics.json").read_text())
    assert set(rows[0]["val_iou"]) == {"background", "nucleus"}
