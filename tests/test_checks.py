"""check_dataset: one of each fault planted -> each reported with its file and kind, nothing
else; clean data sets (synthetic, CamVid, ISBI 2012) -> no problem."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import shared_dataset

from seglab.config import DataConfig
from seglab.data.checks import KINDS, Problem, check_dataset, summarize
from seglab.data.dataset import DatasetDefinition

CLASSES = ["bg", "a", "b"]
COLORS = [(0, 0, 0), (255, 0, 0), (0, 255, 0)]
S = 64
RNG = np.random.default_rng(0)


def definition(root: Path, fmt: str = "folder", **kw) -> DatasetDefinition:
    if fmt == "folder":
        kw = {"classes": CLASSES, "colors": COLORS, **kw}
    return DatasetDefinition.from_config(DataConfig(format=fmt, root=root, **kw))


def _image(root: Path, stem: str, size: tuple[int, int] = (S, S)) -> Path:
    p = root / "images" / f"{stem}.png"
    cv2.imwrite(str(p), RNG.integers(0, 256, (*size, 3), dtype=np.uint8))
    return p


def _mask(root: Path, stem: str, size: tuple[int, int] = (S, S), value: int | None = None) -> Path:
    p = root / "masks" / f"{stem}.png"
    m = RNG.integers(0, 3, size).astype(np.uint8)
    if value is not None:
        m[0, 0] = value
    cv2.imwrite(str(p), m)
    return p


def clean_folder(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(6):
        _image(root, f"t{i}")
        _mask(root, f"t{i}")
    for i in range(2):
        _image(root, f"v{i}")
        _mask(root, f"v{i}")
    # an RGB colour-coded mask with known colours, and an ignored pixel in an index mask
    _image(root, "colour")
    rgb = np.array(COLORS, np.uint8)[RNG.integers(0, 3, (S, S))]
    cv2.imwrite(str(root / "masks" / "colour.png"), rgb[..., ::-1])
    _image(root, "ignored")
    _mask(root, "ignored", value=255)
    (root / "train.txt").write_text("\n".join([*(f"t{i}" for i in range(6)), "colour", "ignored"]))
    (root / "val.txt").write_text("v0\nv1\n")
    return root


@pytest.fixture
def faulty(tmp_path) -> tuple[Path, set[tuple[str, str]]]:
    """A folder data set with one of each fault; returns it and the expected (file, kind)."""
    root = clean_folder(tmp_path / "faulty")
    img, msk = root / "images", root / "masks"
    expected = set()
    _image(root, "badimg")
    (img / "badimg.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    _mask(root, "badimg")
    expected.add((str(img / "badimg.png"), "unreadable_image"))
    _image(root, "badmask")
    (msk / "badmask.png").write_bytes(b"garbage")
    expected.add((str(msk / "badmask.png"), "unreadable_mask"))
    _image(root, "wrongsize")
    _mask(root, "wrongsize", size=(S // 2, S))
    expected.add((str(msk / "wrongsize.png"), "size_mismatch"))
    _image(root, "stray")
    _mask(root, "stray", value=7)
    expected.add((str(msk / "stray.png"), "undeclared_value"))
    _image(root, "unknown")
    rgb = np.array(COLORS, np.uint8)[RNG.integers(0, 3, (S, S))]
    rgb[5, 5:9] = (10, 20, 30)
    cv2.imwrite(str(msk / "unknown.png"), rgb[..., ::-1])
    expected.add((str(msk / "unknown.png"), "unknown_color"))
    _image(root, "nomask")
    expected.add((str(msk / "nomask.png"), "missing_mask"))
    _mask(root, "orphan")
    expected.add((str(msk / "orphan.png"), "orphan_mask"))
    _image(root, "small", size=(S // 10, S // 10))
    _mask(root, "small", size=(S // 10, S // 10))
    expected.add((str(img / "small.png"), "size_outlier"))
    (root / "test.txt").write_text("\n")
    expected.add((str(root / "test.txt"), "empty_split"))
    stems = ["badimg", "badmask", "wrongsize", "stray", "unknown", "nomask", "small"]
    with (root / "train.txt").open("a") as f:
        f.write("\n" + "\n".join(stems) + "\n")
    return root, expected


def test_every_planted_fault_is_reported_once(faulty):
    root, expected = faulty
    seen = []
    problems = check_dataset(definition(root), progress=lambda it: seen.extend(it) or seen)
    got = [(p.file, p.kind) for p in problems]
    assert sorted(got) == sorted(expected)
    assert len(seen) == 8 + 7 + 2  # train (clean + faulty) and val samples, each once
    for p in problems:
        assert isinstance(p, Problem) and p.kind in KINDS
        assert Path(p.file).name.split(".")[0] in p.message and "\n" not in p.message
    unknown = next(p for p in problems if p.kind == "unknown_color")
    assert "(10,20,30) on 4 pixels" in unknown.message
    summary = summarize(problems)
    assert summary.splitlines()[0] == f"{len(expected)} problems:"
    assert "  size_mismatch: 1" in summary and "  orphan_mask: 1" in summary


def test_clean_folder_has_no_problems(tmp_path, synth_root):
    assert check_dataset(definition(clean_folder(tmp_path / "clean"))) == []
    d = DatasetDefinition.from_config(
        DataConfig(format="folder", root=synth_root, classes=["bg", "c", "r", "t"])
    )
    assert check_dataset(d) == []
    assert summarize([]) == "no problems found"


def test_listing_problems(tmp_path):
    root = clean_folder(tmp_path / "d")
    _image(root, "dup")
    _mask(root, "dup")
    cv2.imwrite(str(root / "masks" / "dup.bmp"), np.zeros((S, S), np.uint8))
    (root / "val.txt").write_text("v0\nv1\nghost\n")
    (root / "images" / "v1.png").unlink()
    (root / "train.txt").write_text((root / "train.txt").read_text() + "\ndup\n")
    got = {(p.file, p.kind) for p in check_dataset(definition(root))}
    assert got == {
        (str(root / "masks" / "dup.png"), "duplicate_stem"),
        (str(root / "val.txt"), "unreadable_image"),  # lists v1 and ghost: no such images
        (str(root / "masks" / "v1.png"), "orphan_mask"),
    }
    msgs = [p.message for p in check_dataset(definition(root)) if p.kind == "unreadable_image"]
    assert len(msgs) == 2 and "'ghost'" in msgs[1]


def test_missing_splits(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    problems = check_dataset(definition(root))
    assert [(p.file, p.kind) for p in problems] == [(str(root), "missing_split")] * 2
    assert "'train'" in problems[0].message and "'val'" in problems[1].message
    clean = clean_folder(tmp_path / "c")
    [p] = check_dataset(definition(clean), splits=["train", "holdout"])
    assert p.kind == "missing_split" and "holdout" in p.message


def test_training_splits_and_named_splits_are_required(tmp_path):
    """seglab train loads train and val; a split named in data.splits must exist too (test
    may be missing)."""
    root = clean_folder(tmp_path / "d")
    (root / "val.txt").unlink()
    [p] = check_dataset(definition(root))
    assert (p.file, p.kind) == (str(root), "missing_split") and "'val'" in p.message
    (root / "val.txt").write_text("v0\nv1\n")
    [p] = check_dataset(definition(root, splits={"holdout": "holdout.txt"}))
    assert (p.file, p.kind) == (str(root / "holdout.txt"), "missing_split")
    assert "data.splits.holdout" in p.message


def test_unlabelled_train_and_val_images_are_missing_masks(tmp_path):
    """ADE20K whose validation annotations were not extracted: training would fail on the
    val images without mask; the testing split may be unlabelled."""
    root = tmp_path / "ADEChallengeData2016"
    for folder, stem in (("training", "t1"), ("validation", "v1"), ("testing", "x1")):
        (root / "images" / folder).mkdir(parents=True)
        _image(root, f"{folder}/{stem}")
    (root / "annotations" / "training").mkdir(parents=True)
    cv2.imwrite(str(root / "annotations" / "training" / "t1.png"), np.ones((S, S), np.uint8))
    problems = check_dataset(definition(root, "ade20k"))
    assert [(p.file, p.kind) for p in problems] == [
        (str(root / "images" / "validation" / "v1.png"), "missing_mask")
    ]
    assert "'val'" in problems[0].message and "has no mask" in problems[0].message


def test_unlabelled_split_without_masks_folder(tmp_path):
    """A test split with no masks at all is unlabelled (images to predict), as ISBI's is;
    a train split without masks is reported once, not per image."""
    root = clean_folder(tmp_path / "d")
    (root / "images" / "test").mkdir()
    _image(root, "test/x")
    _image(root, "test/y")
    assert check_dataset(definition(root)) == []
    d = definition(root, splits={"train": "images/test"})
    [p] = check_dataset(d, ["train"])
    assert (p.file, p.kind) == (str(root / "masks" / "test"), "missing_mask")
    assert "2 images" in p.message and "unlabelled" in p.message


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("camvid", "camvid"), ("isbi2012", "isbi2012"), ("tiny_coco", "coco"), ("dsb2018", "dsb2018")],
)
def test_shared_datasets_are_clean(name, fmt):
    root = shared_dataset(name)
    assert check_dataset(definition(root, fmt)) == []


def test_converted_copy_keeps_its_unlabelled_split_unlabelled(tmp_path):
    """`data convert` writes an unlabelled test split as images and a list only; the copy
    reads it back as unlabelled (not as labelled with every mask missing) and checks clean."""
    from seglab.data.convert import convert_dataset
    from seglab.data.dataset import load_definition

    root = clean_folder(tmp_path / "d")
    _image(root, "x0")
    _image(root, "x1")
    (root / "test.txt").write_text("x0\nx1\n")
    source = definition(root)
    assert [it.mask for it in source.pairs("test")] == [None, None]
    copy = load_definition(convert_dataset(source, tmp_path / "copy"))
    assert [it.mask for it in copy.pairs("test")] == [None, None]
    assert all(it.mask is not None for it in copy.pairs("train"))
    assert check_dataset(copy) == []
