"""The one inference path: image -> logits -> mask.

Validation during training, ``seglab evaluate`` and ``seglab predict`` all call
:meth:`Predictor.logits`, so "val mIoU" and "test mIoU" are computed the same way.
Input policy: optional rescale by ``scale``; pad to the network's stride (reflect);
forward under the run's precision; crop back; resize logits to the input size.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from seglab.data.io import adapt_channels, read_image
from seglab.errors import SeglabError
from seglab.models.registry import SegModel, build_model


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


class Predictor:
    """Turns images into logits and masks with one model and one input policy."""

    def __init__(
        self,
        model: SegModel,
        meta: dict,
        scale: float = 1.0,
        precision: str = "auto",
        channels_last: bool = True,
    ) -> None:
        self.model = model
        self.meta = meta
        self.scale = scale
        self.precision = resolve_precision(precision)
        self.channels_last = channels_last

    @property
    def num_classes(self) -> int:
        return len(self.meta["classes"])

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """``B x C x H x W`` pixels (0..255, any H, W) -> float32 logits ``B x K x H x W``."""
        h, w = images.shape[-2:]
        x = images.float()
        if self.scale != 1.0:
            size = (max(1, round(h * self.scale)), max(1, round(w * self.scale)))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        sh, sw = x.shape[-2:]
        stride = self.model.stride
        ph, pw = (-sh) % stride, (-sw) % stride
        if ph or pw:
            mode = "reflect" if ph < sh and pw < sw else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            out = self.model(x)
        out = out[..., :sh, :sw].float()
        if (sh, sw) != (h, w):
            out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
        return out

    def to_tensor(self, image: np.ndarray, path: str | Path = "<image>") -> torch.Tensor:
        """``H x W x C`` uint8 image -> ``1 x C x H x W`` tensor with the model's channels."""
        img = adapt_channels(
            image if image.ndim == 3 else image[:, :, None], self.meta["in_channels"], path
        )
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]

    @torch.inference_mode()
    def predict(self, image: np.ndarray, path: str | Path = "<image>") -> np.ndarray:
        """``H x W x C`` uint8 image -> ``H x W`` uint8 class-index mask of the same size."""
        self.model.eval()
        return self.logits(self.to_tensor(image, path)).argmax(1)[0].to(torch.uint8).numpy()

    def predict_file(self, path: str | Path) -> tuple[np.ndarray, np.ndarray]:
        """Read an image file and return (image, mask)."""
        image = read_image(path)
        return image, self.predict(image, path)

    @classmethod
    def from_checkpoint(cls, run_or_ckpt: str | Path) -> Predictor:
        model, config, meta = load_checkpoint(run_or_ckpt)
        return cls(
            model,
            meta,
            scale=config["inference"]["scale"],
            precision=config["train"]["precision"],
            channels_last=config["train"]["channels_last"],
        )


def resolve_checkpoint(run_or_ckpt: str | Path) -> Path:
    """A run directory -> its best (else last) checkpoint; a file -> itself."""
    p = Path(run_or_ckpt)
    if p.is_dir():
        for name in ("best.ckpt", "last.ckpt"):
            if (p / "checkpoints" / name).is_file():
                return p / "checkpoints" / name
        raise SeglabError(f"run {p} has no checkpoints/best.ckpt or last.ckpt; train it first")
    if not p.is_file():
        raise SeglabError(f"{p} is neither a run directory nor a checkpoint file; check the path")
    return p


def read_checkpoint(path: Path) -> dict:
    """Load a seglab checkpoint safely (``weights_only``: no pickled code runs)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means the file is unusable
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise SeglabError(
            f"checkpoint {path} cannot be read ({reason}); pass a .ckpt written by seglab train"
        ) from None
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not hp or "config" not in hp or "meta" not in hp or "state_dict" not in ckpt:
        raise SeglabError(
            f"checkpoint {path} is not a seglab checkpoint (no config/meta); "
            "pass a .ckpt written by seglab train"
        )
    return ckpt


def load_checkpoint(run_or_ckpt: str | Path) -> tuple[SegModel, dict, dict]:
    """(model in eval mode, resolved config dict, dataset meta) from a run or checkpoint."""
    path = resolve_checkpoint(run_or_ckpt)
    ckpt = read_checkpoint(path)
    config, meta = ckpt["hyper_parameters"]["config"], ckpt["hyper_parameters"]["meta"]
    m = config["model"]
    model = build_model(
        m["name"],
        len(meta["classes"]),
        meta["in_channels"],
        meta["mean"],
        meta["std"],
        encoder=m["encoder"],
        encoder_weights=None,
        options=m["options"],
    )
    state = {
        k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")
    }
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise SeglabError(
            f"checkpoint {path} does not match its model config ({first[:160]}); "
            "it was changed or written by another version"
        ) from None
    model.eval()
    if config["train"]["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    return model, config, meta


def colorize(mask: np.ndarray, colors: list) -> np.ndarray:
    """Index mask -> RGB image with each class's colour (unknown indices black)."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(colors)] = np.asarray(colors, dtype=np.uint8)
    return lut[mask]


def overlay(image: np.ndarray, mask: np.ndarray, colors: list, alpha: float = 0.5) -> np.ndarray:
    """Blend the colour mask over the image (grey images shown as RGB)."""
    rgb = image[:, :, :3] if image.shape[2] >= 3 else np.repeat(image[:, :, :1], 3, axis=2)
    out = rgb.astype(np.float32) * (1 - alpha) + colorize(mask, colors).astype(np.float32) * alpha
    return out.round().clip(0, 255).astype(np.uint8)
