"""Images deeper than 8 bits: ``data.intensity_range`` decides how they become 0..255, the
same way in training, evaluation, predict, export and serve; ``data check`` flags 12-bit data
that the default ``>> 8`` would squeeze into 16 grey levels."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
import tifffile
from conftest import tiny_config

from seglab.config import config_from_dict
from seglab.data.checks import check_dataset
from seglab.data.dataset import DatasetDefinition, SegDataset
from seglab.data.io import read_image
from seglab.errors import SeglabError
from seglab.export import export
from seglab.inference.predictor import Predictor
from seglab.serve.images import decode_upload
from seglab.training.train import train


def twelve_bit(rng: np.random.Generator, shape=(20, 30)) -> np.ndarray:
    return rng.integers(0, 4096, shape, dtype=np.uint16)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_range_maps_lo_hi_onto_0_255(tmp_path, suffix):
    img = twelve_bit(np.random.default_rng(0))
    f = tmp_path / f"a{suffix}"
    if suffix == ".png":
        cv2.imwrite(str(f), img)
    else:
        tifffile.imwrite(f, img)
    default = read_image(f)[..., 0]
    assert default.max() <= 15  # >> 8: 16 grey levels of 4096
    np.testing.assert_array_equal(default, img >> 8)
    full = read_image(f, (0, 4095))[..., 0]
    np.testing.assert_array_equal(full, np.round(img.astype(np.float64) * 255 / 4095))
    assert len(np.unique(full)) > 200  # of 600 pixels: far more than >> 8 leaves
    clipped = read_image(f, [1000, 2000])[..., 0]  # YAML gives a list
    assert clipped[img <= 1000].max() == 0 and clipped[img >= 2000].min() == 255


def test_percentile_stretches_each_image():
    from seglab.data.imageio_ext import PERCENTILES, _to_uint8

    rng = np.random.default_rng(1)
    img = twelve_bit(rng, (50, 50)) // 4 + 100  # values 100..1123
    img[0, 0] = 65535  # one hot pixel does not set the range
    out = _to_uint8(img, "percentile")
    lo, hi = np.percentile(img, PERCENTILES)
    inside = (img > lo) & (img < hi)
    expected = np.round((img[inside] - lo) * 255 / (hi - lo))
    np.testing.assert_allclose(out[inside], expected, atol=1)
    assert out.min() == 0 and out.max() == 255 and out[0, 0] == 255
    assert len(np.unique(out)) > 200
    # 8-bit images are read as they are, whatever the setting
    eight = rng.integers(0, 256, (5, 5), dtype=np.uint8)
    assert _to_uint8(eight, "percentile") is eight and _to_uint8(eight, (0, 4095)) is eight


def test_config_refuses_an_empty_range(tmp_path):
    cfg = tiny_config(tmp_path, data={"intensity_range": [4095, 0]})
    with pytest.raises(SeglabError, match=r"data\.intensity_range.*hi > lo"):
        config_from_dict(cfg)
    ok = config_from_dict(tiny_config(tmp_path, data={"intensity_range": "percentile"}))
    assert ok.data.intensity_range == "percentile"


@pytest.fixture(scope="module")
def deep_root(synth_root, tmp_path_factory):
    """The synthetic data set with its images stored as 12-bit values in 16-bit PNGs."""
    root = tmp_path_factory.mktemp("deep")
    shutil.copytree(synth_root, root, dirs_exist_ok=True)
    for f in (root / "images").glob("*.png"):
        img = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(f), img.astype(np.uint16) * 16)  # 0..4080
    return root


def test_check_flags_12_bit_images_read_by_shift(deep_root):
    section = tiny_config(deep_root)["data"]
    d = DatasetDefinition.from_config(config_from_dict({"data": section}).data)
    [found] = [p for p in check_dataset(d, ["train"]) if p.kind == "few_grey_levels"]
    n = len(list((deep_root / "images").glob("train_*.png")))
    assert found.message.startswith(f"{n} 16-bit images of split 'train'")  # once per split
    assert "data.intensity_range: [0, 4095]" in found.message and "\n" not in found.message
    section["intensity_range"] = [0, 4095]
    d = DatasetDefinition.from_config(config_from_dict({"data": section}).data)
    assert not [p for p in check_dataset(d, ["train"]) if p.kind == "few_grey_levels"]


def test_training_predict_export_and_serve_read_alike(deep_root, synth_root, tmp_path):
    """The model sees the same 8-bit image in training (the data set), in predict, through
    an export, and in an upload to the service."""
    cfg = tiny_config(deep_root, train={"epochs": 1}, data={"intensity_range": [0, 4095]})
    run = train(config_from_dict(cfg), tmp_path / "runs")
    d = DatasetDefinition.from_config(config_from_dict(cfg).data)
    ds = SegDataset(d, "test", cache=False)
    f = ds.pairs[0].image
    seen_in_training = ds.load(0)[0]
    original = cv2.cvtColor(cv2.imread(str(synth_root / "images" / f.name)), cv2.COLOR_BGR2RGB)
    assert np.abs(seen_in_training.astype(int) - original).max() <= 1  # not >> 8
    p = Predictor.open(run, backend="torch")
    image, mask = p.predict_file(f)
    np.testing.assert_array_equal(image, seen_in_training)
    exported = export(run, "torchscript", tmp_path / "ts")
    q = Predictor.open(exported.parent)
    np.testing.assert_array_equal(q.predict_file(f)[0], seen_in_training)
    upload = decode_upload(f.read_bytes(), 1 << 24, 1 << 24, p.meta["intensity_range"])
    np.testing.assert_array_equal(upload, seen_in_training)


def test_converted_copy_reads_its_16_bit_images_alike(deep_root, tmp_path):
    from seglab.data.convert import convert_dataset
    from seglab.data.dataset import load_definition

    section = tiny_config(deep_root, data={"intensity_range": [0, 4095]})["data"]
    d = DatasetDefinition.from_config(config_from_dict({"data": section}).data)
    yaml_path = convert_dataset(d, tmp_path / "copy", splits=["val"])
    copy = load_definition(yaml_path)
    assert copy.intensity_range == (0, 4095)
    a, b = SegDataset(d, "val", cache=False), SegDataset(copy, "val", cache=False)
    np.testing.assert_array_equal(a.load(0)[0], b.load(0)[0])


def test_percentile_of_a_flat_image_falls_back_to_its_min_max():
    from seglab.data.imageio_ext import _to_uint8

    img = np.full((40, 50), 300, np.uint16)
    img[0, :3] = 3000  # 3 of 2000 pixels: both percentiles are the background's
    out = _to_uint8(img, "percentile")
    assert out[0, :3].tolist() == [255, 255, 255] and out[1:].max() == 0  # not 300 >> 8 = 1


def test_percentile_leaves_a_png_alpha_channel_out(tmp_path):
    rng = np.random.default_rng(3)
    bgra = np.dstack([twelve_bit(rng) for _ in range(3)] + [np.full((20, 30), 65535, np.uint16)])
    f = tmp_path / "rgba.png"
    cv2.imwrite(str(f), bgra)
    img = read_image(f, "percentile")
    assert img.shape[2] == 4 and img[..., :3].max() == 255 and img[..., :3].mean() > 100
    assert (img[..., 3] == 255).all()  # opaque stays opaque


def test_config_refuses_an_infinite_bound(tmp_path):
    with pytest.raises(SeglabError, match=r"data\.intensity_range.*finite"):
        config_from_dict(tiny_config(tmp_path, data={"intensity_range": [0, float("inf")]}))


def test_teacher_reading_images_otherwise_is_refused(deep_root, tmp_path):
    teacher = train(config_from_dict(tiny_config(deep_root, train={"epochs": 1})), tmp_path / "t")
    cfg = tiny_config(
        deep_root, data={"intensity_range": [0, 4095]}, distill={"teacher": str(teacher)}
    )
    with pytest.raises(SeglabError, match="distill.teacher .*intensity_range"):
        train(config_from_dict(cfg), tmp_path / "runs")
