"""The inference engine: backends agree, tiles equal the whole image, TTA keeps shapes,
export folders are self-sufficient, INT8 really quantizes, benchmark reports sane figures."""

from __future__ import annotations

import json
import os
import warnings

import cv2
import numpy as np
import pytest
import torch
from conftest import SHARED, run_cli

import seglab.benchmark
from seglab.benchmark import benchmark, open_predictor
from seglab.data.synthetic import CLASSES
from seglab.data.transforms import scale_input
from seglab.errors import SeglabError
from seglab.export import calibration_inputs, export
from seglab.inference.backends import resolve_backend
from seglab.inference.predictor import (
    Predictor,
    ScaledRows,
    UpsampledArgmax,
    class_argmax,
    gaussian_weight,
    pad_to_stride,
    parse_tta,
    resolve_checkpoint,
)
from seglab.models.registry import build_model

pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")


def test_images(synth_root, n=6):
    files = sorted((synth_root / "images").glob("test_*.png"))[:n]
    return [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]


def big_image(synth_root) -> np.ndarray:
    """A 192 x 256 scene stitched from the synthetic test images (the model's domain)."""
    ims = test_images(synth_root, 6)
    rows = [np.concatenate(ims[i : i + 3], axis=1) for i in (0, 3)]
    return cv2.resize(np.concatenate(rows, axis=0), (256, 192), interpolation=cv2.INTER_LINEAR)


@pytest.fixture(scope="module")
def exports(trained_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    return {f: export(trained_run, f, root / f).parent for f in ("onnx", "openvino", "torchscript")}


def agreement(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return float(np.mean([(x == y).mean() for x, y in zip(a, b, strict=True)]))


def real_images() -> list[np.ndarray]:
    """A few CamVid street photos and ISBI EM slices, when ../shared/datasets is there."""
    out = []
    for pattern in ("camvid/test/*.png", "isbi2012/train/images/2*.png"):
        for f in sorted(SHARED.glob(pattern))[:3]:
            out.append(cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB))
    return out


def test_backends_agree_on_at_least_995_per_mille(trained_run, synth_root, exports):
    images = test_images(synth_root) + [big_image(synth_root)] + real_images()
    ref = Predictor.open(trained_run, backend="torch", precision="fp32")
    expected = [ref.predict(im) for im in images]
    cases = {
        "torch bf16": Predictor.open(trained_run, backend="torch"),
        "openvino from checkpoint": Predictor.open(trained_run, backend="openvino"),
        "onnxruntime": Predictor.open(exports["onnx"], backend="onnxruntime"),
        "openvino on onnx": Predictor.open(exports["onnx"], backend="openvino"),
        "openvino IR": Predictor.open(exports["openvino"]),
        "torchscript": Predictor.open(exports["torchscript"]),
    }
    for name, p in cases.items():
        got = [p.predict(im) for im in images]
        assert all(g.shape == e.shape for g, e in zip(got, expected, strict=True)), name
        assert agreement(got, expected) >= 0.995, name
    assert cases["onnxruntime"].backend.name == "onnxruntime"
    assert cases["openvino IR"].backend.name == "openvino"


def test_auto_backend_is_openvino_when_installed(trained_run):
    assert resolve_backend("auto") == "openvino"
    assert Predictor.open(trained_run).backend.name == "openvino"
    with pytest.raises(SeglabError, match="unknown backend"):
        resolve_backend("tensorrt")


def test_openvino_conversion_is_cached_by_checkpoint_content(trained_run, tmp_path, monkeypatch):
    """Converted once per checkpoint content, and quietly: OpenVINO's tracing through the
    deprecated torch.jit API warns on every conversion, which seglab hides."""
    monkeypatch.setenv("SEGLAB_CACHE", str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Predictor.open(trained_run, backend="openvino")
    assert not [w for w in caught if "torch.jit" in str(w.message)]
    (xml,) = tmp_path.glob("openvino/*/model.xml")
    stamp = xml.stat().st_mtime_ns
    Predictor.open(trained_run, backend="openvino")
    assert list(tmp_path.glob("openvino/*/model.xml")) == [xml]
    assert xml.stat().st_mtime_ns == stamp


class ChannelArgmax:
    """A fake backend whose logits are the input's own channels: receptive field 1 pixel,
    so tiled and whole-image predictions must be identical for every tile layout."""

    name, precision = "fake", "fp32"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


@pytest.mark.parametrize(
    "shape,tile,overlap", [((300, 410), 64, 0.25), ((97, 131), 32, 0.5), ((50, 700), 128, 0.1)]
)
def test_tiles_blend_exactly_when_receptive_field_fits(shape, tile, overlap):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (*shape, 3), dtype=np.uint8)
    meta = {"classes": ["a", "b", "c"], "in_channels": 3}
    p = Predictor(ChannelArgmax(), meta, stride=1, tile=tile, overlap=overlap, max_pixels=1024)
    tiled = p.predict(image)
    assert tiled.shape == shape
    np.testing.assert_array_equal(tiled, image.argmax(2).astype(np.uint8))


def test_tta_scales_count_towards_the_tile_limit():
    """A TTA scale of 2 runs the network on 4x the pixels: an image whose own logits fit
    max_pixels but whose upscaled view does not goes through tiles (a served request with
    tta=4 must not allocate 16x the image)."""
    meta = {"classes": ["a", "b", "c"], "in_channels": 3}
    image = np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    plain = Predictor(ChannelArgmax(), meta, stride=1, tile=32, max_pixels=2000)
    with_tta = Predictor(ChannelArgmax(), meta, stride=1, tile=32, max_pixels=2000, tta="2")
    assert not plain.tiles(40, 40) and with_tta.tiles(40, 40)
    assert (
        with_tta.tta_passes == 2 and Predictor(ChannelArgmax(), meta, 1, tta="d4").tta_passes == 8
    )
    whole = Predictor(ChannelArgmax(), meta, stride=1, max_pixels=10**6, tta="2")
    assert (with_tta.predict(image) == whole.predict(image)).mean() >= 0.995


@pytest.mark.parametrize(
    "scale,size", [(1.0, (192, 256)), (1.0, (181, 229)), (0.5, (383, 509)), (2.0, (181, 229))]
)
def test_tiled_equals_whole_image_on_a_trained_model(trained_run, synth_root, scale, size):
    """Any image size and ``inference.scale`` (CamVid's 0.5, ISBI's 2): tiles are cut from the
    pixels the whole-image path resizes to, on its stride grid, and their scores are resized
    back the same way. Before (tiles at unaligned offsets from an OpenCV INTER_AREA resize,
    masks upsampled by nearest neighbour) the odd sizes agreed on 96.5% (scale 1) and 96.8%
    (scale 0.5)."""
    image = big_image(synth_root)  # 192 x 256; at scale 0.5 the network sees about this size
    if scale < 1:
        image = cv2.resize(image, (512, 384), interpolation=cv2.INTER_LINEAR)
    image = image[: size[0], : size[1]]
    kw = {"backend": "torch", "precision": "fp32"}
    whole = Predictor.open(trained_run, **kw)
    tiled = Predictor.open(trained_run, max_pixels=4096, tile=128, overlap=0.5, **kw)
    whole.scale = tiled.scale = scale
    ref, got = whole.predict(image), tiled.predict(image)
    assert got.shape == ref.shape == image.shape[:2]
    assert (got == ref).mean() >= 0.995


def test_evaluation_tiles_large_images_as_predict_does(trained_run, synth_root, monkeypatch):
    """Validation and `seglab evaluate` score an image above inference.max_pixels in tiles, the
    masks `predict` writes, instead of whole-image logits (a 10000 x 10000 slide's would not
    fit in memory)."""
    from seglab.evaluation.evaluate import load_task
    from seglab.evaluation.metrics import confusion_matrix
    from seglab.inference.predictor import resolve_checkpoint

    task = load_task(resolve_checkpoint(trained_run))
    p = task.predictor
    assert p.max_pixels == 4096 * 4096  # the config's inference settings reach the task
    p.max_pixels, p.tile, p.overlap = 4096, 64, 0.5
    image = big_image(synth_root)  # 192 x 256
    mask = np.random.default_rng(0).integers(0, len(CLASSES), image.shape[:2]).astype(np.uint8)
    tiled = []
    real = Predictor.predict_tiled
    monkeypatch.setattr(Predictor, "predict_tiled", lambda s, im: tiled.append(1) or real(s, im))
    monkeypatch.setattr(Predictor, "logits", lambda *a: pytest.fail("whole-image logits"))
    task.per_image = None
    task.val_cm.reset()
    task._update(
        {
            "image": torch.from_numpy(image).permute(2, 0, 1)[None],
            "mask": torch.from_numpy(mask).long()[None],
            "index": torch.tensor([0]),
        }
    )
    expected = confusion_matrix(mask, p.predict(image), len(CLASSES), 255)
    assert len(tiled) == 2
    np.testing.assert_array_equal(task.val_cm.compute().numpy(), expected)


@pytest.mark.parametrize(
    "shape,scale",
    [((301, 257, 3), 0.5), ((97, 131, 3), 0.37), ((64, 90, 1), 2.0), ((50, 61, 3), 1.3)],
)
def test_scaled_rows_equal_scale_input(shape, scale):
    """Band by band, in any band sizes, the rows of the Predictor's whole-image resize."""
    image = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    ref = scale_input(torch.from_numpy(image).permute(2, 0, 1)[None].float(), scale)[0]
    rows = ScaledRows(image, scale)
    rows.CHUNK = 7
    h = rows.size[0]
    got = torch.cat([rows.rows(a, min(a + 23, h)) for a in range(0, h, 23)], 1)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, atol=0.01, rtol=0)


@pytest.mark.parametrize("size,out_size", [((151, 129), (301, 257)), ((128, 180), (64, 90))])
def test_upsampled_argmax_equals_whole_resize(size, out_size):
    """Scores fed in bands give the mask of resizing all scores bilinearly, then argmax."""
    scores = torch.randn(4, *size, generator=torch.Generator().manual_seed(0))
    ref = class_argmax(
        torch.nn.functional.interpolate(
            scores[None], size=out_size, mode="bilinear", align_corners=False
        )
    )[0]
    up = UpsampledArgmax(size, out_size)
    up.CHUNK = 5
    for a in range(0, size[0], 11):
        up.add(scores[:, a : a + 11])
    np.testing.assert_array_equal(up.mask, ref.numpy())


def test_gaussian_weight_peaks_in_the_centre():
    w = gaussian_weight(64, 96)
    assert w.shape == (64, 96) and w.min() > 0 and w[32, 48] == w.max() > w[0, 0]


@pytest.mark.parametrize("shape", [(97, 131, 3), (64, 64, 1), (33, 200, 3)])
def test_tta_keeps_the_shape_and_changes_scores(trained_run, shape):
    image = np.random.default_rng(1).integers(0, 255, shape, dtype=np.uint8)
    plain = Predictor.open(trained_run, backend="torch", precision="fp32")
    tta = Predictor.open(trained_run, backend="torch", precision="fp32", tta="hflip,vflip,0.75,1.5")
    assert tta.flips == ("hflip", "vflip") and tta.scales == (1.0, 0.75, 1.5)
    x = plain.to_tensor(image)
    with torch.inference_mode():
        a, b = plain.logits(x), tta.logits(x)
    assert a.shape == b.shape == (1, 4, *shape[:2])
    probs = b.exp().sum(1)  # TTA returns log of averaged probabilities
    torch.testing.assert_close(probs, torch.ones_like(probs), atol=1e-4, rtol=0)
    assert not torch.allclose(a.softmax(1), b.exp(), atol=1e-3)
    assert tta.predict(image).shape == shape[:2]


def test_tta_of_a_flip_equivariant_backend_is_exact():
    """With logits = input channels, flips and scale 1 views give the same probabilities."""
    image = np.random.default_rng(2).integers(0, 255, (40, 52, 3), dtype=np.uint8)
    meta = {"classes": ["a", "b", "c"], "in_channels": 3}
    for spec in ("hflip,vflip", "d4"):
        p = Predictor(ChannelArgmax(), meta, stride=1, tta=spec)
        x = p.to_tensor(image).float()
        torch.testing.assert_close(p.logits(x).exp(), x.softmax(1), atol=1e-5, rtol=1e-5)


class ColumnRamp:
    """A fake backend that is not rotation- or flip-equivariant: it adds 0.1 per column to
    the first class's logit, so each view's scores differ and only the right inverse
    transform puts them back in place."""

    name, precision = "fake", "fp32"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        out[:, 0] += 0.1 * torch.arange(x.shape[-1], dtype=x.dtype)
        return out


@pytest.mark.parametrize("hw", [(6, 9), (8, 8)])
def test_d4_tta_averages_the_eight_symmetries_mapped_back(hw):
    image = np.random.default_rng(3).integers(0, 40, (*hw, 3), dtype=np.uint8)
    meta = {"classes": ["a", "b", "c"], "in_channels": 3}
    p = Predictor(ColumnRamp(), meta, stride=1, tta="d4")
    x = p.to_tensor(image).float()
    got = p.logits(x).exp()[0].numpy()
    # the same average written with numpy: transform, run, undo, softmax, mean
    views = []
    for k in range(4):
        for flip in (False, True):
            v = x[0].numpy()[:, :, ::-1] if flip else x[0].numpy()
            v = np.rot90(v, k, axes=(1, 2))
            out = ColumnRamp()(torch.from_numpy(v.copy())[None])[0].numpy()
            out = np.rot90(out, -k, axes=(1, 2))
            views.append((out[:, :, ::-1] if flip else out).copy())
    want = torch.from_numpy(np.stack(views)).softmax(1).mean(0).numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert p.predict(image).shape == hw
    # and it is not the plain prediction: the ramp was averaged over the symmetries
    assert not np.allclose(got, x[0].softmax(0).numpy(), atol=1e-3)


def test_bad_tta_names_the_item():
    with pytest.raises(SeglabError, match="'rotate'"):
        parse_tta("hflip,rotate")


def test_export_folder_is_enough_for_predict(trained_run, exports, synth_root, tmp_path):
    info = json.loads((exports["openvino"] / "seglab.json").read_text())
    assert info["classes"] == CLASSES
    assert info["format"] == "openvino" and info["stride"] == 32 and len(info["colors"]) == 4
    src = synth_root / "images" / "test_0022.png"
    proc = run_cli(
        "predict", exports["onnx"], src, "--out", tmp_path / "p", "--backend", "onnxruntime"
    )
    assert proc.returncode == 0, proc.stderr
    assert "backend: onnxruntime" in proc.stderr
    mask = cv2.imread(str(tmp_path / "p" / "test_0022_mask.png"), cv2.IMREAD_UNCHANGED)
    ref = Predictor.open(trained_run, backend="torch", precision="fp32").predict_file(src)[1]
    assert mask.shape == ref.shape and (mask == ref).mean() >= 0.995


def test_export_refuses_to_overwrite_and_checks_options(trained_run, exports, tmp_path):
    before = sorted(p.name for p in exports["onnx"].iterdir())
    proc = run_cli("export", trained_run, "--format", "onnx", "--out", exports["onnx"])
    assert proc.returncode == 1 and "not empty" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in exports["onnx"].iterdir()) == before
    with pytest.raises(SeglabError, match="--calibration"):
        export(trained_run, "openvino", tmp_path / "q", int8=True)
    with pytest.raises(SeglabError, match="use --format openvino"):
        export(trained_run, "onnx", tmp_path / "q", int8=True, calibration=tmp_path)
    with pytest.raises(SeglabError, match="unknown export format"):
        export(trained_run, "tflite", tmp_path / "q")
    assert not (tmp_path / "q").exists()


def test_broken_export_metadata_is_one_line(exports, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "seglab.json").write_text("{not json")
    with pytest.raises(SeglabError, match="unreadable"):
        Predictor.open(bad)


def test_int8_export_quantizes_and_stays_close(trained_run, synth_root, tmp_path):
    path = export(
        trained_run,
        "openvino",
        tmp_path / "int8",
        int8=True,
        calibration=synth_root / "images",
        calibration_size=16,
    )
    assert "FakeQuantize" in path.read_text() or "fake_convert" in path.read_text().lower()
    assert json.loads((path.parent / "seglab.json").read_text())["int8"] is True
    images = test_images(synth_root)
    ref = Predictor.open(trained_run, backend="torch", precision="fp32")
    q = Predictor.open(path.parent)
    assert agreement([q.predict(i) for i in images], [ref.predict(i) for i in images]) >= 0.9


def test_benchmark_reports_consistent_figures(trained_run, tmp_path):
    out = tmp_path / "bench.json"
    proc = run_cli(
        "benchmark",
        trained_run,
        "--backends",
        "torch,openvino",
        "--precisions",
        "fp32",
        "--batch-sizes",
        "1,2",
        "--size",
        "64x96",
        "--runs",
        "5",
        "--warmup",
        "1",
        "--out",
        out,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [(r["backend"], r["batch"]) for r in rows] == [
        ("torch", 1),
        ("torch", 2),
        ("openvino", 1),
        ("openvino", 2),
    ]
    for r in rows:
        assert 0 < r["latency_p50_ms"] <= r["latency_p90_ms"]
        assert r["images_per_s"] == pytest.approx(r["batch"] * 1000 / r["latency_p50_ms"], rel=0.02)
        assert r["peak_rss_mb"] >= r["rss_before_mb"] > 0


def test_corrupt_exported_model_is_one_line(exports, tmp_path):
    import shutil

    bad = tmp_path / "corrupt"
    shutil.copytree(exports["onnx"], bad)
    (bad / "model.onnx").write_bytes(b"not a model")
    for backend in ("onnxruntime", "openvino"):
        with pytest.raises(SeglabError, match="cannot be loaded.*export the model again"):
            Predictor.open(bad, backend=backend)
    with pytest.raises(SeglabError, match="cannot run a onnx export"):
        Predictor.open(bad, backend="torch")


def edited_checkpoint(trained_run, path, edit):
    """A copy of the tiny run's checkpoint after ``edit(ckpt)``."""
    ckpt = torch.load(resolve_checkpoint(trained_run), map_location="cpu", weights_only=True)
    edit(ckpt)
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def segnet_ckpt(trained_run, tmp_path_factory):
    """The tiny run's checkpoint with a narrow SegNet (random weights) for its U-Net."""

    def to_segnet(ckpt):
        meta = ckpt["hyper_parameters"]["meta"]
        m = {"name": "segnet", "encoder": "vgg16_bn", "options": {"width": 0.125}}
        ckpt["hyper_parameters"]["config"]["model"] |= m
        k, c = len(meta["classes"]), meta["in_channels"]
        net = build_model(
            "segnet", k, c, meta["mean"], meta["std"], "vgg16_bn", options=m["options"]
        )
        ckpt["state_dict"] = {f"model.{k}": v for k, v in net.state_dict().items()}

    return edited_checkpoint(trained_run, tmp_path_factory.mktemp("segnet") / "s.ckpt", to_segnet)


def test_segnet_exports_and_predicts_as_torch(segnet_ckpt, synth_root, tmp_path):
    """SegNet's unpooling is a scatter (not max_unpool2d, which no converter takes): the
    default backend is OpenVINO and every export format predicts the torch masks."""
    images = test_images(synth_root, 3)
    ref = Predictor.open(segnet_ckpt, backend="torch", precision="fp32")
    auto = Predictor.open(segnet_ckpt)
    assert auto.backend.name == "openvino"
    for fmt in ("onnx", "openvino", "torchscript"):
        folder = export(segnet_ckpt, fmt, tmp_path / fmt).parent
        p = Predictor.open(folder, precision="fp32")
        for im in images:
            assert (p.predict(im) == ref.predict(im)).mean() >= 0.995, fmt


def test_a_model_openvino_cannot_convert_falls_back_to_torch(trained_run, monkeypatch, caplog):
    """--backend auto: a conversion failure predicts with torch and says why; an explicit
    --backend openvino names the way out."""
    import logging

    from seglab.inference import predictor as predictor_module
    from seglab.inference.backends import conversion_error

    def fail(*args, **kw):
        raise conversion_error("unet", "OpenVINO", RuntimeError("no such operation"))

    monkeypatch.setattr(predictor_module, "cached_openvino", fail)
    with caplog.at_level(logging.INFO, logger="seglab"):
        p = Predictor.open(trained_run, backend="auto")
    assert p.backend.name == "torch"
    assert "unet cannot be converted to OpenVINO (no such operation)" in caplog.text
    with pytest.raises(SeglabError, match=r"cannot be converted to OpenVINO.*--backend torch"):
        Predictor.open(trained_run, backend="openvino")


def test_instance_runs_are_not_exported_or_benchmarked(trained_run, tmp_path):
    def to_instance(ckpt):
        ckpt["hyper_parameters"]["config"]["task"] = "instance"

    ckpt = edited_checkpoint(trained_run, tmp_path / "inst.ckpt", to_instance)
    proc = run_cli("export", ckpt, "--format", "onnx", "--out", tmp_path / "e")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "instance models run on PyTorch only; use seglab predict" in proc.stderr
    assert not (tmp_path / "e").exists()
    with pytest.raises(SeglabError, match="instance models run on PyTorch only"):
        Predictor.open(ckpt)
    with pytest.raises(SeglabError, match="instance models run on PyTorch only"):
        benchmark(ckpt, ["torch"], ["fp32"], [1])


@pytest.mark.parametrize("size", [0, -1])
def test_calibration_size_below_one_is_an_option_error(trained_run, synth_root, tmp_path, size):
    with pytest.raises(SeglabError, match=f"--calibration-size {size}"):
        export(
            trained_run,
            "openvino",
            tmp_path / "q",
            int8=True,
            calibration=synth_root / "images",
            calibration_size=size,
        )
    assert not (tmp_path / "q").exists()


def test_calibration_takes_any_image_names_and_preprocesses_as_predict(tmp_path):
    """Same stems in two subfolders are fine for calibration (nothing is written), and the
    samples are predict's input: scale_input (antialiased bilinear), padded to the stride."""
    rng = np.random.default_rng(0)
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        img = rng.integers(0, 255, (50, 70, 3), np.uint8)
        cv2.imwrite(str(tmp_path / sub / "same.png"), img)
    samples = calibration_inputs(tmp_path, 3, 32, 0.5, 10)
    assert len(samples) == 2 and samples[0].shape == (1, 3, 32, 64)
    img = cv2.cvtColor(cv2.imread(str(tmp_path / "a" / "same.png")), cv2.COLOR_BGR2RGB)
    x = torch.from_numpy(img.transpose(2, 0, 1).copy())[None].float()
    want = pad_to_stride(scale_input(x, 0.5), 32)
    np.testing.assert_array_equal(samples[0], want.numpy())


def test_predict_twice_into_a_subfolder_does_not_read_its_own_masks(
    trained_run, synth_root, tmp_path
):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("test_0022.png", "test_0023.png"):
        (photos / name).write_bytes((synth_root / "images" / name).read_bytes())
    for _ in range(2):
        proc = run_cli("predict", trained_run, photos, "--out", photos / "pred")
        assert proc.returncode == 0, proc.stderr
        assert "2 masks and overlays" in proc.stdout + proc.stderr
    assert not list((photos / "pred").glob("*_mask_mask.png"))
    assert len(list((photos / "pred").glob("*.png"))) == 4


def die_at_once(*args):
    os._exit(9)


def test_benchmark_reports_a_dead_measurement_process(trained_run, monkeypatch):
    monkeypatch.setattr(seglab.benchmark, "_measure", die_at_once)
    result = benchmark(trained_run, ["torch"], ["fp32"], [1, 2])
    assert [r["error"] for r in result["rows"]] == [
        "the measurement process died with exit code 9"
    ] * 2


def test_benchmark_times_the_network_without_tta(trained_run, tmp_path):
    def with_tta(ckpt):
        ckpt["hyper_parameters"]["config"]["inference"]["tta"] = "hflip"

    ckpt = edited_checkpoint(trained_run, tmp_path / "tta.ckpt", with_tta)
    assert Predictor.open(ckpt, backend="torch").tta  # predict applies the run's TTA
    assert not open_predictor(ckpt, "torch", "fp32", tmp_path).tta
