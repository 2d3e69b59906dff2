"""Inference backends: one callable each, ``float32 B x C x H x W`` pixels (0-255, H and W
multiples of the model's stride) -> ``float32 B x K x H x W`` logits.

``torch`` runs the PyTorch model (bf16 autocast + channels_last on CPUs with native bf16);
``openvino`` and ``onnxruntime`` run an exported file. ``auto`` picks OpenVINO when it is
installed (measured fastest on CPU: benchmarks/predict_speed.py), else torch.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from seglab.errors import SeglabError

log = logging.getLogger("seglab")

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")


@functools.cache
def cpu_has_bf16() -> bool:
    """True when the CPU executes bf16 natively (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(pref: str) -> str:
    """``auto`` -> ``bf16`` on CPUs with native bf16, else ``fp32``."""
    if pref == "auto":
        return "bf16" if cpu_has_bf16() else "fp32"
    return pref


def available(name: str) -> bool:
    module = {"torch": "torch", "onnxruntime": "onnxruntime", "openvino": "openvino"}[name]
    return importlib.util.find_spec(module) is not None


def resolve_backend(name: str) -> str:
    """``auto`` -> ``openvino`` when installed, else ``torch``; others are checked."""
    if name not in BACKENDS:
        raise SeglabError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "auto":
        return "openvino" if available("openvino") else "torch"
    if not available(name):
        raise SeglabError(f"backend {name} is not installed; pip install {name}")
    return name


class TorchBackend:
    name = "torch"

    def __init__(self, model: nn.Module, precision: str = "auto", channels_last: bool = True):
        self.model = model
        self.precision = resolve_precision(precision)
        self.channels_last = channels_last

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            return self.model(x).float()


class OpenVINOBackend:
    name = "openvino"

    def __init__(self, model, precision: str = "auto") -> None:
        """``model``: an ``openvino.Model`` or a path to ``.xml`` / ``.onnx``."""
        import openvino as ov

        config = {"PERFORMANCE_HINT": "LATENCY"}
        if resolve_precision(precision) == "fp32":
            config["INFERENCE_PRECISION_HINT"] = "f32"
        self.precision = precision
        self.compiled = ov.Core().compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.request.infer([np.ascontiguousarray(x.numpy(), dtype=np.float32)])
        return torch.from_numpy(np.array(out[0], dtype=np.float32))


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.precision = "fp32"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        (out,) = self.session.run(None, {self.input: np.ascontiguousarray(x.numpy())})
        return torch.from_numpy(out)


class ConversionError(SeglabError):
    """The OpenVINO, ONNX or TorchScript converter cannot translate a model (an operation it
    does not support, as ``max_unpool2d`` was before SegNet unpooled with a scatter)."""


def conversion_error(arch: str, target: str, err: Exception) -> ConversionError:
    reason = " ".join(str(err).split())[:160] or type(err).__name__
    return ConversionError(f"model {arch} cannot be converted to {target} ({reason})")


def example_input(in_channels: int, stride: int) -> torch.Tensor:
    """A tracing input: 0-255 noise, a few strides high and wide."""
    side = max(256, 4 * stride)
    return torch.rand(1, in_channels, side, side) * 255


def to_openvino(model: nn.Module, in_channels: int, stride: int, arch: str = "model"):
    """PyTorch model -> ``openvino.Model`` with dynamic batch, height and width; a
    :class:`ConversionError` naming ``arch`` when OpenVINO cannot convert it."""
    import openvino as ov

    model = model.to(memory_format=torch.contiguous_format).float().eval()
    with warnings.catch_warnings():
        # OpenVINO's PyTorch frontend traces with torch.jit, which torch 2.14 deprecates: a
        # warning no seglab user can act on, printed on every first predict of a run
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.trace(_method)?` is deprecated", category=FutureWarning
        )
        try:
            return ov.convert_model(
                model,
                example_input=example_input(in_channels, stride),
                input=[ov.PartialShape([-1, in_channels, -1, -1])],
            )
        except Exception as err:  # noqa: BLE001 - any frontend failure: not convertible
            raise conversion_error(arch, "OpenVINO", err) from None


def cache_dir() -> Path:
    return Path(os.environ.get("SEGLAB_CACHE", Path.home() / ".cache" / "seglab"))


def cached_openvino(
    ckpt: Path, model: nn.Module, in_channels: int, stride: int, arch: str = "model"
) -> Path:
    """The OpenVINO IR of a checkpoint, converted once and kept under the cache folder
    (keyed by the checkpoint's content); the checkpoint and its run are not touched."""
    digest = hashlib.sha256()
    with open(ckpt, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    folder = cache_dir() / "openvino" / digest.hexdigest()[:20]
    xml = folder / "model.xml"
    if xml.is_file():
        return xml
    import openvino as ov

    log.info("converting %s to OpenVINO once (cached in %s)", ckpt, folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
    try:
        ov.save_model(to_openvino(model, in_channels, stride, arch), tmp / "model.xml", False)
        os.replace(tmp, folder)
    except OSError:
        if not xml.is_file():  # another process may have won the race
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return xml
