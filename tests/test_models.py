"""Model zoo: every architecture builds, trains a step on odd sizes and channel counts, and
round-trips through save/load; local weights files, the offline hub error, transfer learning."""

from __future__ import annotations

import contextlib
import json
import os

import pytest
import torch
from conftest import run_cli, tiny_config, write_config

from seglab.config import config_from_dict
from seglab.errors import SeglabError
from seglab.inference.predictor import Predictor, load_checkpoint
from seglab.models.registry import MODELS, build_model, encoder_of
from seglab.training.train import train

ARCHS = sorted(MODELS)


def _predictor(model, k, ch):
    meta = {"classes": [str(i) for i in range(k)], "in_channels": ch}
    return Predictor.for_model(model, meta, precision="fp32", channels_last=False)


def test_registry_has_the_expected_architectures():
    assert {
        "fcn",
        "unet",
        "unetplusplus",
        "segnet",
        "deeplabv3",
        "deeplabv3plus",
        "pspnet",
        "hrnet",
        "fpn",
        "lraspp",
    } <= set(MODELS)


@pytest.mark.parametrize("name", ARCHS)
def test_unknown_model_option_names_the_key(name):
    """SMP drops unknown keyword arguments for its own encoders: a typo in model.options
    (decoder_channel for decoder_channels) would otherwise train a different model silently."""
    with pytest.raises(SeglabError, match=r"model\.options.*decoder_channel\b"):
        build_model(name, 3, 3, [0.0] * 3, [1.0] * 3, options={"decoder_channel": [8]})


@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.parametrize("channels", [1, 4])
def test_forward_backward_odd_size_and_roundtrip(tmp_path, name, channels):
    torch.manual_seed(0)
    kw = {"width": 0.25} if name == "segnet" else {}
    model = build_model(name, 3, channels, [0.0] * channels, [1.0] * channels, options=kw)
    model.train()
    x = torch.rand(2, channels, 97, 131) * 255
    out = _predictor(model, 3, channels).logits(x)
    assert out.shape == (2, 3, 97, 131)
    out.mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert sum(g is not None and bool(g.abs().sum() > 0) for g in grads) > len(grads) // 2
    model.eval()
    torch.save(model.state_dict(), tmp_path / "m.pt")
    again = build_model(name, 3, channels, [0.0] * channels, [1.0] * channels, options=kw).eval()
    again.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    with torch.no_grad():
        a = _predictor(model, 3, channels).logits(x[:1])
        b = _predictor(again, 3, channels).logits(x[:1])
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_encoder_weights_file(tmp_path, suffix):
    src = build_model("unet", 2, 3, [0.0] * 3, [1.0] * 3)
    state = {f"encoder.{k}": v.clone() for k, v in encoder_of(src.net).state_dict().items()}
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({"state_dict": state}, path)
    dst = build_model("unet", 5, 3, [0.0] * 3, [1.0] * 3, encoder_weights=str(path))
    for k, v in encoder_of(src.net).state_dict().items():
        torch.testing.assert_close(encoder_of(dst.net).state_dict()[k], v)
    with pytest.raises(SeglabError, match="matches none"):
        torch.save({"x.weight": torch.zeros(3)}, tmp_path / "other.pth")
        build_model("unet", 5, 3, [0.0] * 3, [1.0] * 3, encoder_weights=str(tmp_path / "other.pth"))
    with pytest.raises(SeglabError, match="not found"):
        build_model("unet", 5, 3, [0.0] * 3, [1.0] * 3, encoder_weights=str(tmp_path / "no.pth"))


def test_offline_hub_download_gives_one_line_error(tmp_path, synth_root):
    cfg = tiny_config(
        synth_root,
        model={"name": "unet", "encoder": "resnet18", "encoder_weights": "imagenet", "options": {}},
    )
    env = {
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "TORCH_HOME": str(tmp_path / "torch"),
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        proc = run_cli(
            "train", write_config(tmp_path / "c.yaml", cfg), "--runs-dir", tmp_path / "runs"
        )
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    assert proc.returncode == 1
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "imagenet weights" in err[0] and "encoder_weights:" in err[0]
    assert "Traceback" not in proc.stderr


def test_init_from_and_freeze_encoder(tmp_path, synth_root, trained_run):
    src_model, _, _ = load_checkpoint(trained_run)
    cfg = tiny_config(synth_root, train={"epochs": 1})
    cfg["data"]["classes"] = ["background", "shape", "other"]  # 3 classes: a new head
    root3 = tmp_path / "data3"
    import shutil

    import cv2

    shutil.copytree(synth_root, root3)
    for m in (root3 / "masks").iterdir():
        mask = cv2.imread(str(m), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(m), (mask > 0).astype("uint8") + (mask == 3).astype("uint8"))
    cfg["data"]["root"] = str(root3)
    cfg["model"].update({"init_from": str(trained_run), "freeze_encoder": True})
    run = train(config_from_dict(cfg), tmp_path / "runs")
    log = (run / "train.log").read_text()
    assert "init_from" in log and "re-initialised" in log and "segmentation_head" in log
    new_model, _, _ = load_checkpoint(run)
    src_enc = encoder_of(src_model.net).state_dict()
    new_enc = encoder_of(new_model.net).state_dict()
    for k, v in src_enc.items():  # frozen: weights and batch-norm statistics unchanged
        torch.testing.assert_close(new_enc[k], v)
    head = [k for k in new_model.state_dict() if "segmentation_head" in k and "weight" in k][0]
    assert new_model.state_dict()[head].shape[0] == 3
    assert json.loads((run / "metrics.json").read_text())[0]["val_mIoU"] is not None


def test_init_from_adapts_the_first_conv_to_other_input_channels(trained_run):
    """An RGB run initialises a grey model: the stem's weights are summed over RGB (timm's
    adapt_input_conv), so a grey image gives the stem the response RGB grey gave it."""
    from seglab.training.transfer import init_from

    src, _, meta = load_checkpoint(trained_run)
    assert meta["in_channels"] == 3
    opts = {"encoder_depth": 3, "decoder_channels": [32, 16, 8]}
    grey = build_model("unet", len(meta["classes"]), 1, [0.0], [1.0], options=opts)
    info = init_from(grey, trained_run)
    stem = [k for k in info["adapted"] if "conv1" in k]
    assert stem and stem[0] in info["loaded"] and stem[0] not in info["reinitialised"]
    w_rgb, w_grey = src.state_dict()[stem[0]], grey.state_dict()[stem[0]]
    assert w_grey.shape[1] == 1
    torch.testing.assert_close(w_grey[:, 0], w_rgb.sum(1))
    head = [k for k in info["loaded"] if "segmentation_head" in k]
    assert head  # same class count: the head is loaded too
    # only the stem sees the image: a decoder conv with other input widths (same output
    # width) is re-initialised, not tiled from the source's unrelated weights
    narrow = {"encoder_depth": 3, "decoder_channels": [24, 16, 8]}
    grey = build_model("unet", len(meta["classes"]), 1, [0.0], [1.0], options=narrow)
    info = init_from(grey, trained_run)
    assert info["adapted"] == stem
    assert any(k.startswith("net.decoder.blocks.1") for k in info["reinitialised"])


def test_models_command_lists_every_architecture_with_its_default_encoder():
    r = run_cli("models")
    assert r.returncode == 0, r.stderr
    for name in MODELS:
        assert name in r.stdout
    assert "encoder='resnet18'" in r.stdout and "encoder='hrnet_w18'" in r.stdout
    # SMP architectures list the options the builder accepts (the ones its error names)
    assert "decoder_atrous_rates" in r.stdout and "decoder_attention_type" in r.stdout


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_channels_last_upsample_grads_are_identical(dtype):
    """U-Net's upsample-then-concatenate: the mode re-lays out the sliced gradient before
    the upsampling's backward, which must not change any gradient."""
    import segmentation_models_pytorch as smp

    from seglab.training.task import ChannelsLastUpsampleGrads

    torch.manual_seed(0)
    net = smp.Unet("resnet18", encoder_weights=None, classes=3, decoder_channels=[32, 16, 16, 8, 8])
    net = net.to(dtype=dtype, memory_format=torch.channels_last)
    x = torch.randn(2, 3, 64, 96, dtype=dtype).contiguous(memory_format=torch.channels_last)
    grads = []
    for mode in (False, True):
        net.zero_grad()
        with ChannelsLastUpsampleGrads() if mode else contextlib.nullcontext():
            out = net(x)
        (out.float() ** 2).mean().backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))
    with ChannelsLastUpsampleGrads():
        y = torch.nn.functional.interpolate(x.requires_grad_(), scale_factor=2.0)
    assert y._backward_hooks  # the hook is there: the test above compared two real paths


def test_unfrozen_encoder_trains_again(tmp_path, synth_root, trained_run):
    """model.unfreeze_at_epoch: from that epoch the encoder's weights get gradients and its
    batch norm is in training mode again (Lightning would keep the frozen eval mode)."""
    from lightning.pytorch.callbacks import Callback

    modes: dict[int, set] = {}

    class EncoderMode(Callback):
        def on_train_batch_start(self, trainer, task, batch, batch_idx):
            enc = encoder_of(task.model.net)
            grads = {p.requires_grad for p in enc.parameters()}
            modes.setdefault(trainer.current_epoch, set()).add((enc.training, *grads))

    cfg = tiny_config(synth_root, train={"epochs": 3})
    cfg["model"].update(
        {"init_from": str(trained_run), "freeze_encoder": True, "unfreeze_at_epoch": 1}
    )
    train(config_from_dict(cfg), tmp_path / "runs", callbacks=[EncoderMode()])
    assert modes == {0: {(False, False)}, 1: {(True, True)}, 2: {(True, True)}}


def test_imagenet_first_conv_is_adapted_to_other_input_channels(tmp_path, monkeypatch):
    """A grey LR-ASPP with ImageNet weights keeps the pretrained stem, summed over RGB (as
    SMP and timm encoders do), rather than a random one. The weights come from torch hub's
    cache, where a download would put them (a stand-in file: nothing is downloaded here)."""
    from torchvision.models import MobileNet_V3_Large_Weights, mobilenet_v3_large

    weights = MobileNet_V3_Large_Weights.IMAGENET1K_V1
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.manual_seed(0)
    stand_in = mobilenet_v3_large().state_dict()
    torch.save(stand_in, cache / weights.url.rsplit("/", 1)[1])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    net = build_model("lraspp", 3, 1, [0.0], [1.0], encoder_weights="imagenet")
    (stem,) = [k for k in net.state_dict() if k.endswith("backbone.0.0.weight")]
    torch.testing.assert_close(net.state_dict()[stem][:, 0], stand_in["features.0.0.weight"].sum(1))


def test_model_options_that_cannot_work_are_one_line_errors():
    with pytest.raises(SeglabError, match=r"model.options.variant '4s': use 32s, 16s or 8s"):
        build_model("fcn", 3, 3, [0.0] * 3, [1.0] * 3, options={"variant": "4s"})
    with pytest.raises(SeglabError, match=r"width 0.5: segnet's ImageNet weights fit width 1.0"):
        build_model(
            "segnet", 3, 3, [0.0] * 3, [1.0] * 3, encoder_weights="imagenet", options={"width": 0.5}
        )


def test_segnet_scatter_unpool_equals_max_unpool2d():
    """SegNet unpools with a scatter (convertible to ONNX/OpenVINO/TorchScript): the same
    numbers as torch's MaxUnpool2d, for odd sizes and channels_last input too."""
    from seglab.models.segnet import max_unpool

    x = torch.randn(2, 8, 11, 14)
    for t in (x, x.contiguous(memory_format=torch.channels_last)):
        y, idx = torch.nn.MaxPool2d(2, 2, return_indices=True)(t)
        ref = torch.nn.MaxUnpool2d(2, 2)(y, idx, output_size=x.shape[-2:])
        assert torch.equal(max_unpool(y, idx, x.shape[-2:]), ref)
