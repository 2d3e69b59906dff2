"""The one inference path: image -> logits -> mask.

Validation during training, ``seglab evaluate`` and ``seglab predict`` all call
:class:`Predictor`, so "val mIoU" and "test mIoU" are computed the same way.
Input policy: optional rescale by ``scale``; pad to the network's stride (reflect);
forward through a backend (torch, OpenVINO, ONNX Runtime); crop back; resize logits to the
input size. Optional test-time augmentation (flips, scales; probabilities averaged) and,
for images above ``max_pixels``, sliding-window tiles blended with Gaussian weights whose
memory is bounded by one row of tiles.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from seglab.data.io import adapt_channels, read_image
from seglab.data.transforms import scale_input
from seglab.errors import SeglabError
from seglab.inference.backends import (
    ConversionError,
    OnnxRuntimeBackend,
    OpenVINOBackend,
    TorchBackend,
    cached_openvino,
    resolve_backend,
    resolve_precision,
)
from seglab.models.registry import SegModel, build_model

__all__ = ["Predictor", "load_checkpoint", "resolve_precision"]

log = logging.getLogger("seglab")

FLIPS = ("hflip", "vflip", "d4")
# d4: the 8 symmetries of the square (4 rotations by 90 degrees, each with and without a
# horizontal flip), for images without an up or a left (microscopy, EM, satellite tiles)


def _views(flips: Sequence[str]) -> list[tuple[int, bool]]:
    """TTA views as (quarter turns, horizontal flip first); (0, False) is the image itself."""
    if "d4" in flips:
        return [(k, f) for k in range(4) for f in (False, True)]
    named = {"hflip": (0, True), "vflip": (2, True)}  # vflip = hflip, then half a turn
    return [(0, False), *[named[f] for f in flips]]


def tta_passes(flips: Sequence[str], scales: Sequence[float]) -> int:
    """Network passes per image: TTA views times scales (1 without TTA)."""
    return len(_views(flips)) * len(scales)


def parse_tta(spec: str | Sequence[str] | None) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """``"hflip,vflip,0.75,1.25"`` -> (flips, scales); scale 1.0 is always included."""
    items = spec.split(",") if isinstance(spec, str) else list(spec or [])
    flips, scales = [], [1.0]
    for item in (i.strip() for i in items if str(i).strip()):
        if item in FLIPS:
            flips.append(item)
            continue
        try:
            value = float(item)
        except ValueError:
            raise SeglabError(
                f"unknown test-time augmentation {item!r}; use hflip, vflip, d4 or "
                "scales like 0.75,1.25"
            ) from None
        if not 0.1 <= value <= 4:
            raise SeglabError(f"TTA scale {value} is out of range; use 0.1 to 4")
        scales.append(value)
    return tuple(dict.fromkeys(flips)), tuple(dict.fromkeys(scales))


def gaussian_weight(h: int, w: int) -> torch.Tensor:
    """nnU-Net style tile weight: Gaussian with sigma = side/8, floored to avoid zeros."""

    def g(n: int) -> torch.Tensor:
        x = torch.arange(n, dtype=torch.float32) - (n - 1) / 2
        return torch.exp(-0.5 * (x / (n / 8)) ** 2)

    wgt = g(h)[:, None] * g(w)[None, :]
    return (wgt / wgt.max()).clamp_min(1e-3)


TILE_BATCH_PIXELS = 1024 * 1024


def run_padded(net, x: torch.Tensor, stride: int) -> torch.Tensor:
    """``net(x)`` for any ``h x w``: pad the bottom and right edges to a multiple of
    ``stride`` (reflect; replicate when the pad exceeds the image), run, crop back.
    Shared by training and inference so both see the same border."""
    sh, sw = x.shape[-2:]
    return net(pad_to_stride(x, stride))[..., :sh, :sw]


def pad_to_stride(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Pad the bottom and right edges of ``... x h x w`` to multiples of ``stride``
    (reflect; replicate when the pad exceeds the image)."""
    sh, sw = x.shape[-2:]
    ph, pw = (-sh) % stride, (-sw) % stride
    if ph or pw:
        mode = "reflect" if ph < sh and pw < sw else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x


def class_argmax(scores: torch.Tensor) -> torch.Tensor:
    """Argmax over the class axis of ``... x K x H x W`` scores -> ``... x H x W`` int64.

    torch reduces over a strided (not innermost) axis about ten times slower on a CPU than
    over the innermost one (30 ms against 3 ms for 11 x 360 x 480), so the classes are moved
    last first; ties resolve to the lowest index either way."""
    return scores.movedim(-3, -1).contiguous().argmax(-1)


def tile_starts(size: int, tile: int, step: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, step))
    return starts + [size - tile]


def aa_bilinear_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Along one axis, the weights of torch's antialiased bilinear resize from ``n_in`` to
    ``n_out`` pixels (``scale_input``): output ``i`` is ``sum_k w[i, k] * x[lo[i] + k]``.

    The formula of ATen's ``_compute_indices_min_size_weights_aa`` (UpSampleKernel.cpp);
    ``test_scaled_rows_equal_scale_input`` holds it to ``F.interpolate``."""
    ratio = n_in / n_out
    support = max(ratio, 1.0)  # the triangle widens with the downscale factor
    centre = ratio * (np.arange(n_out) + 0.5)
    lo = np.maximum((centre - support + 0.5).astype(np.int64), 0)
    hi = np.minimum((centre + support + 0.5).astype(np.int64), n_in)
    k = np.arange(int((hi - lo).max()))
    w = np.clip(1 - np.abs((lo[:, None] + k - centre[:, None] + 0.5) / support), 0, None)
    w[lo[:, None] + k >= hi[:, None]] = 0
    return lo, (w / w.sum(1, keepdims=True)).astype(np.float32)


class ScaledRows:
    """Rows of the image the network sees whole, on demand: ``scale_input(image, scale)``,
    padded at the bottom and right to a multiple of ``stride`` as ``run_padded`` pads it.

    For images too large to convert to float and resize at once (a 10000x10000 RGB image
    is 1.2 GB in float32): tiles cut from these rows at multiples of the stride see the
    pixels, and the downsampling grid, of the whole-image path."""

    CHUNK = 128  # output rows resized at a time: bounds the float copy of the input

    def __init__(self, image: np.ndarray, scale: float, stride: int = 1) -> None:
        self.image = image  # H x W x C uint8
        h, w = image.shape[:2]
        self.scale = scale
        if scale != 1:
            h, w = max(1, round(h * scale)), max(1, round(w * scale))
            self.lo, self.w = aa_bilinear_weights(image.shape[0], h)
        self.size = (h, w)
        self.padded = (h + (-h) % stride, w + (-w) % stride)
        # run_padded's pad: reflect, or replicate when a pad exceeds the image
        self.reflect = (-h) % stride < h and (-w) % stride < w

    def rows(self, y0: int, y1: int) -> torch.Tensor:
        """Padded network-scale rows ``[y0, y1)``: float32 ``C x (y1 - y0) x W_padded``."""
        (h, w), (_, wp) = self.size, self.padded
        idx = np.arange(y0, y1)
        if y1 > h:
            idx = np.where(idx < h, idx, 2 * (h - 1) - idx if self.reflect else h - 1)
        a, b = int(idx.min()), int(idx.max()) + 1
        if self.scale == 1:
            out = torch.from_numpy(self.image[a:b]).permute(2, 0, 1).float()
        else:
            out = torch.empty(self.image.shape[2], b - a, w)
            for r in range(a, b, self.CHUNK):
                out[:, r - a : r - a + self.CHUNK] = self._scaled(r, min(r + self.CHUNK, b))
        if y1 > h:
            out = out[:, torch.from_numpy(idx - a)]
        if wp > w:
            out = F.pad(out, (0, wp - w), mode="reflect" if self.reflect else "replicate")
        return out

    def _scaled(self, y0: int, y1: int) -> torch.Tensor:
        lo, w = self.lo[y0:y1], self.w[y0:y1]
        a, b = int(lo[0]), int(min(lo[-1] + w.shape[1], self.image.shape[0]))
        src = torch.from_numpy(self.image[a:b]).permute(2, 0, 1)[None].float()
        src = F.interpolate(  # horizontal only: the row count stays, so rows pass unchanged
            src, size=(b - a, self.size[1]), mode="bilinear", align_corners=False, antialias=True
        )[0]
        out = torch.zeros(src.shape[0], y1 - y0, self.size[1])
        for k in range(w.shape[1]):  # vertical: a few weighted rows per output row
            idx = torch.from_numpy(np.minimum(lo - a + k, b - a - 1))
            out += torch.from_numpy(w[:, k])[None, :, None] * src[:, idx]
        return out


def bilinear_sources(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """torch's bilinear resize (align_corners=False) along one axis: for each output pixel
    its two source pixels and the weight of the second."""
    scale = np.float32(n_in) / np.float32(n_out)  # in float32, as the kernel computes it
    src = np.maximum(scale * (np.arange(n_out, dtype=np.float32) + 0.5) - 0.5, 0)
    i0 = src.astype(np.int64)
    return i0, np.minimum(i0 + 1, n_in - 1), src - i0.astype(np.float32)


class UpsampledArgmax:
    """The input-size mask from network-scale scores that arrive a band of rows at a time:
    the argmax of the scores resized bilinearly to the input size, as
    :meth:`Predictor.logits` computes it for a whole image, ``CHUNK`` rows at a time.

    A bilinear value is a convex combination of four source pixels, so where all four have
    the same argmax, so does the value; only pixels whose sources disagree (class edges)
    are interpolated, over all classes."""

    CHUNK = 64

    def __init__(self, size: tuple[int, int], out_size: tuple[int, int]) -> None:
        (h, w), (self.h0, self.w0) = size, out_size
        self.same = (h, w) == out_size
        self.mask = np.empty(out_size, dtype=np.uint8)
        self.i0, self.i1, self.fy = bilinear_sources(h, self.h0)
        self.j0, self.j1, self.fx = bilinear_sources(w, self.w0)
        self.j1_of = np.minimum(np.arange(w) + 1, w - 1)  # a column's right neighbour
        self.kept: torch.Tensor | None = None  # scores of network rows [first, first + n)
        self.first = 0
        self.done = 0  # mask rows written

    def add(self, scores: torch.Tensor) -> None:
        """The next network rows' scores, ``K x n x W``."""
        if self.same:
            n = scores.shape[1]
            self.mask[self.done : self.done + n] = class_argmax(scores).to(torch.uint8).numpy()
            self.done += n
            return
        kept = scores if self.kept is None else torch.cat([self.kept, scores], 1)
        n, w = kept.shape[1:]
        vectors = kept.movedim(0, -1).contiguous().numpy().reshape(n * w, -1)  # classes last
        labels = vectors.argmax(1).astype(np.uint8).reshape(n, w)
        # source blocks (rows i, i + 1 x columns j, j + 1; clamped at the image's edges)
        # whose four pixels have one label: the bilinear scores in them have that argmax
        below = labels[np.minimum(np.arange(n) + 1, n - 1)]
        single = (
            (labels == below) & (labels == labels[:, self.j1_of]) & (below == below[:, self.j1_of])
        )
        end = int(np.searchsorted(self.i1, self.first + n))  # mask rows now complete
        for r0 in range(self.done, end, self.CHUNK):
            r1 = min(r0 + self.CHUNK, end)
            y0, y1 = self.i0[r0:r1] - self.first, self.i1[r0:r1] - self.first
            out = labels[y0][:, self.j0]
            r, c = np.nonzero(~single[y0][:, self.j0])
            if len(r):  # class edges: the bilinear scores over all classes, then argmax
                top, bottom, left, right = y0[r] * w, y1[r] * w, self.j0[c], self.j1[c]
                fx, fy = self.fx[c, None], self.fy[r0 + r, None]  # as torch's kernel forms them
                upper = (1 - fx) * vectors[top + left] + fx * vectors[top + right]
                lower = (1 - fx) * vectors[bottom + left] + fx * vectors[bottom + right]
                out[r, c] = ((1 - fy) * upper + fy * lower).argmax(1)
            self.mask[r0:r1] = out
        self.done = max(self.done, end)
        if self.done < self.h0:  # keep the rows later mask rows still read
            drop = int(self.i0[self.done]) - self.first
            self.kept, self.first = kept[:, drop:], self.first + drop


class Predictor:
    """Turns images into logits and masks with one backend and one input policy."""

    def __init__(
        self,
        backend: Callable[[torch.Tensor], torch.Tensor],
        meta: dict,
        stride: int,
        scale: float = 1.0,
        tta: str | Sequence[str] | None = None,
        max_pixels: int = 4096 * 4096,
        tile: int = 1024,
        overlap: float = 0.25,
        batch_size: int = 4,
    ) -> None:
        self.backend = backend
        self.meta = meta
        self.stride = stride
        self.scale = scale
        self.flips, self.scales = parse_tta(tta)
        self.max_pixels = max_pixels
        self.tile = max(stride, tile // stride * stride)
        self.overlap = overlap
        self.batch_size = batch_size

    @classmethod
    def for_model(
        cls,
        model: SegModel,
        meta: dict,
        scale: float = 1.0,
        precision: str = "auto",
        channels_last: bool = True,
        **kw,
    ) -> Predictor:
        return cls(TorchBackend(model, precision, channels_last), meta, model.stride, scale, **kw)

    @property
    def num_classes(self) -> int:
        return len(self.meta["classes"])

    @property
    def tta(self) -> bool:
        return bool(self.flips) or len(self.scales) > 1

    @property
    def tta_passes(self) -> int:
        return tta_passes(self.flips, self.scales)

    # -- the network on stride-padded input -------------------------------------------
    def _padded(self, x: torch.Tensor) -> torch.Tensor:
        """Float ``B x C x h x w`` -> logits of the same size (pad to stride, run, crop)."""
        return run_padded(self.backend, x, self.stride).float()

    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, or with TTA the log of the probabilities averaged over all views."""
        if not self.tta:
            return self._padded(x)
        h, w = x.shape[-2:]
        views = _views(self.flips)
        total = None
        for s in self.scales:
            xs = x
            if s != 1.0:
                size = (max(1, round(h * s)), max(1, round(w * s)))
                xs = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            for turns, flip in views:
                v = xs.flip(3) if flip else xs
                out = self._padded(torch.rot90(v, turns, (2, 3)) if turns else v)
                out = torch.rot90(out, -turns, (2, 3)) if turns else out
                out = out.flip(3) if flip else out
                if s != 1.0:
                    out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
                p = out.softmax(1)
                total = p if total is None else total + p
        return (total / self.tta_passes).clamp_min(1e-8).log()

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """``B x C x H x W`` pixels (0..255, any H, W) -> float32 logits ``B x K x H x W``
        (log-probabilities when TTA is on)."""
        h, w = images.shape[-2:]
        out = self._scores(scale_input(images.float(), self.scale))
        if out.shape[-2:] != (h, w):
            out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
        return out

    # -- sliding window for large images ---------------------------------------------
    def predict_tiled(self, image: np.ndarray) -> np.ndarray:
        """``H x W x C`` uint8 -> ``H x W`` uint8 mask by overlapping tiles.

        Tiles are cut from the image at the network's scale (``ScaledRows``: the whole-image
        path's resize, a band at a time). Tile logits are weighted by a Gaussian and summed; a
        row of tiles is finished as soon as no later tile covers it and goes to
        ``UpsampledArgmax`` (resize to the input size, argmax), so memory is one band of
        ``tile`` rows times the image width times the class count, not the whole logit
        volume."""
        h0, w0 = image.shape[:2]
        source = ScaledRows(image, self.scale, self.stride)
        (h, w), (hp, wp) = source.size, source.padded
        out = UpsampledArgmax((h, w), (h0, w0))
        # tiles and their steps are multiples of the stride, and so is the padded image:
        # every tile sits on the whole image's downsampling grid
        th, tw = min(self.tile, hp), min(self.tile, wp)
        step_h = max(self.stride, round(th * (1 - self.overlap) / self.stride) * self.stride)
        step_w = max(self.stride, round(tw * (1 - self.overlap) / self.stride) * self.stride)
        ys, xs = tile_starts(hp, th, step_h), tile_starts(wp, tw, step_w)
        weight = gaussian_weight(th, tw)
        # tiles per forward pass: batch_size, but no more than TILE_BATCH_PIXELS (the
        # network's activations grow with the batch, and batching buys little on a CPU)
        per_batch = max(1, min(self.batch_size, TILE_BATCH_PIXELS // (th * tw)))
        k = self.num_classes
        # rows [y0, y0 + th): Gaussian-weighted scores and, last, the weights' sum; finished
        # rows are normalised, so their resize to the input size mixes scores, not weights
        band = torch.zeros(k + 1, th, wp)

        def finish(n: int) -> None:  # band rows [0, n) are complete: on to the mask
            for r in range(0, n, out.CHUNK):  # a few rows at a time: small temporaries
                rows = slice(r, min(r + out.CHUNK, n))
                out.add(band[:k, rows, :w] / band[k, rows, :w])

        y0 = 0
        for yi, y in enumerate(ys):
            if y > y0:  # rows [y0, y) are complete: finish them, shift the band
                finish(y - y0)
                kept = band[:, y - y0 :].clone()
                band.zero_()
                band[:, : kept.shape[1]] = kept
                y0 = y
            rows = source.rows(y, y + th)
            for i in range(0, len(xs), per_batch):
                cols = xs[i : i + per_batch]
                batch = torch.stack([rows[:, :, x : x + tw] for x in cols])
                scores = self._scores(batch) * weight
                for j, x in enumerate(cols):
                    band[:k, :, x : x + tw] += scores[j]
                    band[k, :, x : x + tw] += weight
            if yi == len(ys) - 1:
                finish(h - y0)
        return out.mask

    # -- images -----------------------------------------------------------------------
    def to_tensor(self, image: np.ndarray, path: str | Path = "<image>") -> torch.Tensor:
        """``H x W x C`` uint8 image -> ``1 x C x H x W`` tensor with the model's channels."""
        return torch.from_numpy(np.ascontiguousarray(self.adapt(image, path).transpose(2, 0, 1)))[
            None
        ]

    def adapt(self, image: np.ndarray, path: str | Path = "<image>") -> np.ndarray:
        return adapt_channels(
            image if image.ndim == 3 else image[:, :, None], self.meta["in_channels"], path
        )

    def _eval_mode(self) -> None:
        model = getattr(self.backend, "model", None)
        if model is not None:
            model.eval()

    def tiles(self, h: int, w: int) -> bool:
        """Whether an ``h x w`` image goes through :meth:`predict_tiled`: its logits, at the
        input's or the network's largest size (TTA scales included), would exceed
        ``max_pixels``."""
        return h * w * max(self.scale * max(self.scales), 1.0) ** 2 > self.max_pixels

    @torch.inference_mode()
    def predict(self, image: np.ndarray, path: str | Path = "<image>") -> np.ndarray:
        """``H x W x C`` uint8 image -> ``H x W`` uint8 class-index mask of the same size."""
        self._eval_mode()
        if self.tiles(*image.shape[:2]):
            return self.predict_tiled(self.adapt(image, path))
        return class_argmax(self.logits(self.to_tensor(image, path)))[0].to(torch.uint8).numpy()

    @torch.inference_mode()
    def predict_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Same-sized images below the tile limit in one forward pass -> their masks, as
        :meth:`predict` gives them one by one."""
        self._eval_mode()
        batch = torch.cat([self.to_tensor(im) for im in images])
        return list(class_argmax(self.logits(batch)).to(torch.uint8).numpy())

    def predict_file(self, path: str | Path) -> tuple[np.ndarray, np.ndarray]:
        """Read an image file and return (image, mask)."""
        image = read_image(path, self.meta.get("intensity_range"))
        return image, self.predict(image, path)

    # -- construction -----------------------------------------------------------------
    @classmethod
    def open(
        cls,
        source: str | Path,
        backend: str | None = None,
        precision: str | None = None,
        **kw,
    ) -> Predictor:
        """A run directory, a checkpoint or an exported model folder (``seglab export``)."""
        p = Path(source)
        if (p / "seglab.json").is_file():
            return cls.from_export(p, backend, precision, **kw)
        ckpt = resolve_checkpoint(p)
        model, config, meta = load_checkpoint(ckpt)
        precision = precision or config["train"]["precision"]
        inf = config["inference"]
        for key in ("scale", "batch_size", "tta", "max_pixels", "tile", "overlap"):
            if key in inf:
                kw.setdefault(key, inf[key])
        requested = backend or inf.get("backend", "auto")
        name = resolve_backend(requested)
        channels_last = config["train"]["channels_last"]
        if name == "openvino":
            try:
                arch = config["model"]["name"]
                xml = cached_openvino(ckpt, model, meta["in_channels"], model.stride, arch)
                engine = OpenVINOBackend(xml, precision)
            except ConversionError as err:
                if requested != "auto":
                    raise SeglabError(f"{err}; use --backend torch") from None
                log.info("%s; predicting with the torch backend instead", err)
                name = "torch"
                if channels_last:  # the conversion left the weights contiguous
                    model = model.to(memory_format=torch.channels_last)
        if name == "torch":
            engine = TorchBackend(model, precision, channels_last)
        elif name != "openvino":
            raise SeglabError(
                f"backend onnxruntime needs an exported model; run seglab export {source} "
                "--format onnx and predict with the exported folder"
            )
        return cls(engine, meta, model.stride, **kw)

    @classmethod
    def from_export(
        cls, folder: Path, backend: str | None = None, precision: str | None = None, **kw
    ) -> Predictor:
        try:
            info = json.loads((folder / "seglab.json").read_text())
            file = folder / info["file"]
            fmt = info["format"]
            name = {"onnx": "onnxruntime", "openvino": "openvino", "torchscript": "torch"}[fmt]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise SeglabError(
                f"{folder / 'seglab.json'} is unreadable ({err}); export the model again"
            ) from None
        if not file.is_file():
            raise SeglabError(f"exported model file {file} is missing; export the model again")
        if backend in (None, "auto"):
            backend = (
                "openvino" if fmt == "onnx" and resolve_backend("auto") == "openvino" else name
            )
        backend = resolve_backend(backend)
        precision = precision or "auto"
        if (backend, fmt) not in {
            ("openvino", "onnx"),
            ("openvino", "openvino"),
            ("onnxruntime", "onnx"),
            ("torch", "torchscript"),
        }:
            raise SeglabError(
                f"backend {backend} cannot run a {fmt} export ({file}); use --backend {name}"
            )
        try:
            if backend == "openvino":
                engine = OpenVINOBackend(file, precision)
            elif backend == "onnxruntime":
                engine = OnnxRuntimeBackend(file)
            else:
                model = torch.jit.load(str(file), map_location="cpu").eval()
                engine = TorchBackend(model, precision, channels_last=True)
        except Exception as err:  # noqa: BLE001 - any loader failure: the file is unusable
            reason = " ".join(str(err).split())[:160] or type(err).__name__
            raise SeglabError(
                f"exported model {file} cannot be loaded ({reason}); export the model again"
            ) from None
        kw.setdefault("scale", info["scale"])
        for key in ("batch_size", "tta", "max_pixels", "tile", "overlap"):
            if key in info.get("inference", {}):
                kw.setdefault(key, info["inference"][key])
        return cls(engine, info, info["stride"], **kw)

    @classmethod
    def from_checkpoint(cls, run_or_ckpt: str | Path, **kw) -> Predictor:
        """The reference path: the checkpoint's PyTorch model under its training precision."""
        return cls.open(run_or_ckpt, backend="torch", **kw)


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


def read_semantic_checkpoint(run_or_ckpt: str | Path) -> dict:
    """:func:`read_checkpoint` of a run or checkpoint whose model is semantic: instance
    models are not exported, benchmarked or run on other backends."""
    path = resolve_checkpoint(run_or_ckpt)
    ckpt = read_checkpoint(path)
    if ckpt["hyper_parameters"]["config"].get("task") == "instance":
        raise SeglabError(
            f"{path} is an instance model (task: instance); instance models run on PyTorch "
            f"only; use seglab predict {run_or_ckpt}"
        )
    return ckpt


def load_checkpoint(run_or_ckpt: str | Path) -> tuple[SegModel, dict, dict]:
    """(model in eval mode, resolved config dict, dataset meta) from a run or checkpoint."""
    path = resolve_checkpoint(run_or_ckpt)
    ckpt = read_semantic_checkpoint(run_or_ckpt)
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
