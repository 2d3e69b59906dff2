"""``seglab export``: a run's model as ONNX, OpenVINO IR or TorchScript, plus ``seglab.json``
(classes, colours, channels, stride, input policy) so the folder alone is enough for
``seglab predict``. Normalisation is inside the model: exported models take raw 0-255 pixels.
Height and width are dynamic (any multiple of the stride; the Predictor pads).

INT8: post-training static quantization of the OpenVINO model with NNCF, calibrated on
images from a folder, preprocessed by the same input policy as prediction.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from seglab.data.imageio_ext import Intensity
from seglab.errors import SeglabError
from seglab.inference.backends import (
    ConversionError,
    conversion_error,
    example_input,
    to_openvino,
)
from seglab.inference.predictor import load_checkpoint, resolve_checkpoint

log = logging.getLogger("seglab")

FORMATS = {"onnx": "model.onnx", "openvino": "model.xml", "torchscript": "model.pt"}


def calibration_inputs(
    folder: Path,
    in_channels: int,
    stride: int,
    scale: float,
    limit: int,
    intensity: Intensity = None,
) -> list[np.ndarray]:
    """Up to ``limit`` images from ``folder``, scaled and padded as the Predictor does."""
    from seglab.data.io import IMAGE_SUFFIXES, adapt_channels, read_image
    from seglab.data.transforms import scale_input
    from seglab.inference.predict import image_files
    from seglab.inference.predictor import pad_to_stride

    files = image_files(folder)
    if not files:
        raise SeglabError(
            f"--calibration {folder} has no images ({', '.join(IMAGE_SUFFIXES)}); "
            "pass a folder of typical images"
        )
    step = max(1, len(files) // limit)
    out = []
    for f in files[::step][:limit]:
        img = adapt_channels(read_image(f, intensity), in_channels, f)
        x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None].float()
        out.append(pad_to_stride(scale_input(x, scale), stride).numpy())
    return out


def export(
    run_or_ckpt: str | Path,
    fmt: str,
    out: Path,
    int8: bool = False,
    calibration: Path | None = None,
    calibration_size: int = 100,
) -> Path:
    """Write ``out/`` (model file + seglab.json); returns the model file's path."""
    if fmt not in FORMATS:
        raise SeglabError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if int8 and fmt != "openvino":
        raise SeglabError("--int8 quantizes OpenVINO models (NNCF); use --format openvino")
    if int8 and (calibration is None or not Path(calibration).is_dir()):
        raise SeglabError(
            f"--int8 needs --calibration DIR, a folder of typical images (got {calibration})"
        )
    if int8 and calibration_size < 1:
        raise SeglabError(
            f"--calibration-size {calibration_size}: calibrate on at least 1 image (default 100)"
        )
    if out.exists() and any(out.iterdir()):
        raise SeglabError(f"{out} exists and is not empty; choose another --out or delete it")
    ckpt = resolve_checkpoint(run_or_ckpt)
    model, config, meta = load_checkpoint(ckpt)
    model = model.to(memory_format=torch.contiguous_format).float().eval()
    c, stride, arch = meta["in_channels"], model.stride, config["model"]["name"]
    inference = {k: v for k, v in config["inference"].items() if k != "scale"}
    info = {
        "format": fmt,
        "file": FORMATS[fmt],
        "int8": int8,
        "classes": meta["classes"],
        "colors": meta["colors"],
        "in_channels": c,
        "ignore_index": meta.get("ignore_index"),
        "intensity_range": meta.get("intensity_range"),
        "stride": stride,
        "scale": config["inference"]["scale"],
        "inference": inference,
        "input": "float32 N x C x H x W, raw 0-255 pixels, H and W multiples of stride",
        "output": "float32 N x K x H x W logits",
        "model": {"name": config["model"]["name"], "encoder": config["model"]["encoder"]},
        "source": str(ckpt),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        target = tmp / FORMATS[fmt]
        x = example_input(c, stride)
        if fmt == "onnx":
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    torch.onnx.export(
                        model,
                        (x,),
                        str(target),
                        input_names=["image"],
                        output_names=["logits"],
                        dynamic_axes={
                            "image": {0: "n", 2: "h", 3: "w"},
                            "logits": {0: "n", 2: "h", 3: "w"},
                        },
                        opset_version=17,
                        dynamo=False,
                    )
            except Exception as err:  # noqa: BLE001 - any exporter failure: not convertible
                raise conversion_error(arch, "ONNX", err) from None
        elif fmt == "torchscript":
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    traced = torch.jit.trace(model, x, check_trace=False)
            except Exception as err:  # noqa: BLE001 - any tracer failure: not convertible
                raise conversion_error(arch, "TorchScript", err) from None
            traced.save(str(target))
        else:
            import openvino as ov

            ov_model = to_openvino(model, c, stride, arch)
            if int8:
                ov_model = quantize_openvino(
                    ov_model,
                    calibration_inputs(
                        Path(calibration),
                        c,
                        stride,
                        info["scale"],
                        calibration_size,
                        meta.get("intensity_range"),
                    ),
                )
            ov.save_model(ov_model, target, compress_to_fp16=False)
        (tmp / "seglab.json").write_text(json.dumps(info, indent=1) + "\n")
        for f in tmp.iterdir():
            f.chmod(0o644)
        tmp.chmod(0o755)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    except ConversionError as err:
        raise SeglabError(
            f"{err}; predict from the run instead: seglab predict {run_or_ckpt} --backend torch"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out / FORMATS[fmt]


def quantize_openvino(ov_model, samples: list[np.ndarray]):
    """NNCF post-training INT8 quantization (activations and weights), CPU preset."""
    import nncf

    logging.getLogger("nncf").setLevel(logging.ERROR)
    return nncf.quantize(
        ov_model,
        nncf.Dataset(samples),
        subset_size=len(samples),
        model_type=None,
        preset=nncf.QuantizationPreset.MIXED,
        fast_bias_correction=True,
    )
