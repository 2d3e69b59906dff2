"""Run configuration: YAML validated by pydantic before any work starts.

Every section forbids unknown keys, so a typo names the key, the file and the
allowed keys instead of being silently ignored.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from seglab.errors import SeglabError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    """Where the data set is and how to read it."""

    format: Literal[
        "folder", "camvid", "isbi2012", "voc", "cityscapes", "ade20k", "coco", "dsb2018"
    ] = Field(description="dataset layout (see the README's data layouts)")
    root: Path = Field(
        description="dataset folder; relative paths are resolved from the config file"
    )
    classes: list[str] | None = Field(None, description="class names; default: the format's")
    colors: list[tuple[int, int, int]] | None = Field(None, description="RGB colour per class")
    ignore_index: int | None = Field(
        None, ge=0, le=255, description="mask value that is not scored; null: the format's"
    )
    in_channels: int | None = Field(None, ge=1, description="image channels; default: format's")
    splits: dict[str, str] = Field(
        default_factory=dict,
        description="split name -> list file or sub-folder (folder format); default train/val/test",
    )
    mean: list[float] | None = Field(None, description="per-channel mean (0-255 scale)")
    std: list[float] | None = Field(None, description="per-channel std (0-255 scale)")
    intensity_range: tuple[float, float] | Literal["percentile"] | None = Field(
        None,
        description="how images of more than 8 bits (16-bit, float) become 0..255: null: "
        "16-bit >> 8, float min-max per image; [lo, hi]: lo..hi onto 0..255, clipped "
        "(12-bit: [0, 4095]); percentile: each image's 1st..99.8th percentile. 8-bit images "
        "are read as they are",
    )
    cache: bool = Field(True, description="decode every image once and keep it in memory")
    train_fraction: float = Field(
        1.0, gt=0, le=1, description="train on this random share of the train split (nested)"
    )

    @field_validator("intensity_range")
    @classmethod
    def _range_increases(cls, v):
        if isinstance(v, tuple) and not (math.isfinite(v[0]) and math.isfinite(v[1])):
            raise ValueError(f"[lo, hi] must be finite numbers, got {list(v)}")
        if isinstance(v, tuple) and not v[1] > v[0]:
            raise ValueError(f"[lo, hi] needs hi > lo, got {list(v)}")
        return v


class ModelConfig(_Strict):
    name: str = Field("unet", description="architecture in the registry (seglab models)")
    encoder: str | None = Field(
        None, description="encoder (SMP name, or tu-<timm name>); null: the architecture's default"
    )
    encoder_weights: str | None = Field(None, description="null, imagenet, or a weights file")
    options: dict[str, Any] = Field(default_factory=dict, description="extra builder arguments")
    init_from: Path | None = Field(
        None, description="start from an earlier seglab run or checkpoint (transfer learning)"
    )
    freeze_encoder: bool = Field(False, description="train only the decoder and head")
    unfreeze_at_epoch: int | None = Field(None, ge=1, description="unfreeze the encoder here")


class LossConfig(_Strict):
    name: Literal["ce", "dice", "ce+dice"] = "ce"
    class_weights: list[float] | Literal["median_frequency", "inverse_log"] | None = Field(
        None,
        description="per-class weights, or computed on the train split: median_frequency "
        "(SegNet, median(f)/f_c) or inverse_log (ENet, 1/ln(1.02 + p_c), a milder balance)",
    )
    dice_weight: float = Field(1.0, ge=0, description="weight of the Dice term in ce+dice")
    ohem_thresh: float | None = Field(
        None,
        gt=0,
        le=1,
        description="online hard example mining for the CE term (MMSeg's OHEM sampler): "
        "average only over pixels whose predicted probability of their true class is below "
        "this, e.g. 0.7; null: every labelled pixel",
    )
    ohem_min_kept: float = Field(
        1 / 16,
        ge=0,
        le=1,
        description="with ohem_thresh: keep at least this share of the labelled pixels of a "
        "batch, the hardest ones (BiSeNet's 1/16)",
    )

    @model_validator(mode="after")
    def _ohem_needs_ce(self) -> LossConfig:
        if self.ohem_thresh is not None and self.name == "dice":
            raise ValueError(
                "ohem_thresh mines the CE term, and loss.name dice has none; "
                "use ce or ce+dice, or set ohem_thresh to null"
            )
        return self


class ColorJitterConfig(_Strict):
    brightness: float = Field(0.0, ge=0)
    contrast: float = Field(0.0, ge=0)
    saturation: float = Field(0.0, ge=0)
    hue: float = Field(0.0, ge=0, le=0.5)


class ElasticConfig(_Strict):
    """The U-Net paper's elastic deformation: random displacements on a coarse grid."""

    p: float = Field(0.0, ge=0, le=1, description="probability per sample (0: off)")
    grid: int = Field(3, ge=2, description="displacements on a grid x grid lattice")
    sigma: float = Field(10.0, gt=0, description="std of the displacements in pixels")


class AugmentConfig(_Strict):
    """Training augmentation, applied identically to image and mask (nearest for masks)."""

    scale: tuple[float, float] = Field((1.0, 1.0), description="random scale range")
    rotate: float = Field(0.0, ge=0, le=180, description="max rotation in degrees")
    translate: float = Field(0.0, ge=0, le=1, description="max shift as a fraction of size")
    crop: tuple[int, int] | None = Field(None, description="random crop (height, width)")
    hflip: float = Field(0.0, ge=0, le=1, description="probability of a horizontal flip")
    vflip: float = Field(0.0, ge=0, le=1, description="probability of a vertical flip")
    elastic: ElasticConfig = Field(default_factory=ElasticConfig)
    color_jitter: ColorJitterConfig = Field(default_factory=ColorJitterConfig)


class TrainConfig(_Strict):
    epochs: int = Field(50, ge=1)
    max_minutes: float | None = Field(None, gt=0, description="stop after this wall-clock time")
    max_steps: int | None = Field(
        None, ge=1, description="stop after this many optimizer steps (a budget load can't bend)"
    )
    batch_size: int = Field(8, ge=1)
    lr: float = Field(1e-3, gt=0)
    encoder_lr: float | None = Field(None, gt=0, description="encoder learning rate; null: lr")
    weight_decay: float = Field(1e-4, ge=0)
    ema_decay: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="keep an exponential moving average of the weights (e.g. 0.998); "
        "validation, checkpoints and inference use the average",
    )
    optimizer: Literal["adamw", "sgd"] = "adamw"
    scheduler: Literal["cosine", "poly", "none"] = Field(
        "cosine", description="after a 5% linear warm-up; the schedule follows the budget"
    )
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="auto: bf16 autocast on CPUs with bf16 support, fp32 elsewhere"
    )
    channels_last: bool = True
    num_workers: int | Literal["auto"] = "auto"
    early_stopping_patience: int | None = Field(
        None, ge=1, description="stop after this many epochs without a better val mIoU"
    )
    val_every: int = Field(1, ge=1, description="validate every N epochs")
    devices: int = Field(1, ge=1)
    num_nodes: int = Field(1, ge=1)

    @field_validator("scheduler", mode="before")
    @classmethod
    def _legacy_scheduler(cls, v: Any) -> Any:
        # runs saved before 2026-12 record the old default "onecycle", which trained with poly
        return "poly" if v == "onecycle" else v


class InferenceConfig(_Strict):
    """The input policy shared by validation, evaluate and predict."""

    scale: float = Field(1.0, gt=0, le=4, description="run the network at this input scale")
    batch_size: int = Field(4, ge=1, description="images (or tiles) per forward pass")
    backend: Literal["auto", "torch", "onnxruntime", "openvino"] = Field(
        "auto", description="predict's engine; auto = OpenVINO when installed, else torch"
    )
    tta: list[str] = Field(
        default_factory=list, description="test-time augmentation: hflip, vflip, d4, scales (0.75)"
    )
    max_pixels: int = Field(
        4096 * 4096, ge=1024, description="larger (scaled) images are predicted in tiles"
    )
    tile: int = Field(1024, ge=32, description="tile side in network pixels")
    overlap: float = Field(0.25, ge=0, lt=0.9, description="tile overlap fraction")


class DistillConfig(_Strict):
    """Knowledge distillation: match a trained teacher's softened predictions."""

    teacher: Path = Field(description="teacher run directory or checkpoint (seglab train)")
    weight: float = Field(0.5, ge=0, le=1, description="share of the distillation term")
    temperature: float = Field(2.0, gt=0, description="softmax temperature of both models")
    class_weighted: bool = Field(
        True,
        description="weight each pixel's distillation term by its label's loss.class_weights, "
        "as the cross-entropy is weighted (false: plain mean, the frequent classes dominate)",
    )


class InstanceConfig(_Strict):
    """Instance segmentation (``task: instance``): Mask R-CNN or boundary-aware U-Net."""

    method: Literal["maskrcnn", "boundary"] | None = Field(
        None, description="null: maskrcnn when model.name is maskrcnn, else boundary"
    )
    min_size: int = Field(800, ge=32, description="Mask R-CNN: shorter image side is resized to")
    max_size: int = Field(1333, ge=32, description="Mask R-CNN: longer side at most")
    scale: float | None = Field(
        None, gt=0, le=8, description="Mask R-CNN: resize every image by this factor instead"
    )
    anchor_sizes: list[int] | None = Field(
        None, description="Mask R-CNN anchor sizes in pixels; null: 32..512 (small objects: 8..)"
    )
    detections_per_image: int = Field(100, ge=1, description="Mask R-CNN: at most this many")
    proposals: int = Field(
        1000,
        ge=1,
        description="Mask R-CNN: region proposals per image at inference, before and after the "
        "RPN's NMS (torchvision: 1000); fewer is faster on a CPU, too few miss objects",
    )
    trainable_backbone_layers: int = Field(3, ge=0, le=6, description="Mask R-CNN backbone")
    boundary_width: int = Field(2, ge=1, le=10, description="boundary class width in pixels")
    crop: tuple[int, int] | None = Field(
        (256, 256), description="random training crop (height, width); null: whole images"
    )
    score_threshold: float = Field(
        0.5, ge=0, le=1, description="Mask R-CNN: detections kept in the instance map"
    )
    marker_threshold: float = Field(0.6, gt=0, lt=1, description="watershed markers: p(interior)")
    foreground_threshold: float = Field(
        0.5, gt=0, lt=1, description="watershed mask: p(interior) + p(boundary)"
    )
    min_area: int = Field(8, ge=0, description="instances smaller than this are dropped")
    tune: bool = Field(True, description="tune the thresholds on the validation split")


class Config(_Strict):
    task: Literal["semantic", "instance"] = Field(
        "semantic", description="semantic: a class per pixel; instance: one id per object"
    )
    name: str = Field("run", description="run name; runs/<name>/ (suffixed when it exists)")
    seed: int = 0
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    distill: DistillConfig | None = Field(None, description="train against a teacher model")
    instance: InstanceConfig = Field(default_factory=InstanceConfig)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not v or "/" in v or v.startswith("."):
            raise ValueError("must be a plain name without '/' or a leading '.'")
        return v


_SECTIONS: dict[str, type[BaseModel]] = {
    "": Config,
    "data": DataConfig,
    "model": ModelConfig,
    "loss": LossConfig,
    "augment": AugmentConfig,
    "augment.color_jitter": ColorJitterConfig,
    "train": TrainConfig,
    "inference": InferenceConfig,
    "distill": DistillConfig,
    "instance": InstanceConfig,
}


def _describe(err: ValidationError, source: str) -> str:
    e = err.errors()[0]
    loc = [str(p) for p in e["loc"]]
    key = ".".join(loc)
    if e["type"] == "extra_forbidden":
        section = ".".join(loc[:-1])
        model = _SECTIONS.get(section)
        allowed = ", ".join(model.model_fields) if model else "?"
        return f"{source}: unknown key '{key}'; allowed keys here: {allowed}"
    if e["type"] == "missing":
        return f"{source}: key '{key}' is required"
    return f"{source}: key '{key}': {e['msg']} (got {e.get('input')!r})"


def _set_dotted(d: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for p in parts[:-1]:
        if d.get(p) is None:  # absent, or an optional section set to null (distill: null)
            d[p] = {}
        nxt = d[p]
        if not isinstance(nxt, dict):
            raise SeglabError(f"--set {dotted}: '{p}' is not a section")
        d = nxt
    d[parts[-1]] = value


def config_from_dict(raw: dict, source: str = "<config>", base_dir: Path | None = None) -> Config:
    """Validate a config dictionary; relative ``data.root`` resolves from ``base_dir``."""
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as err:
        raise SeglabError(_describe(err, source)) from None
    if base_dir is not None and not cfg.data.root.is_absolute():
        cfg.data.root = (base_dir / cfg.data.root).resolve()
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Load and validate a YAML config, applying ``key.sub=value`` overrides (YAML values)."""
    path = Path(path)
    if not path.is_file():
        raise SeglabError(f"config file {path} not found; pass the path of a YAML config")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SeglabError(
            f"{path}{where}: not valid YAML ({getattr(err, 'problem', err)})"
        ) from None
    if not isinstance(raw, dict):
        raise SeglabError(f"{path}: the config must be a mapping of keys to values")
    for item in overrides or []:
        if "=" not in item:
            raise SeglabError(f"--set {item!r}: expected key=value, e.g. --set train.epochs=5")
        key, value = item.split("=", 1)
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise SeglabError(
                f"--set {key.strip()}: {value!r} is not a valid YAML value "
                f"({getattr(err, 'problem', err)}); e.g. --set 'augment.crop=[256, 256]'"
            ) from None
        _set_dotted(raw, key.strip(), parsed)
    return config_from_dict(raw, str(path), base_dir=path.parent)


def config_to_dict(cfg: Config) -> dict:
    """A plain, YAML/JSON-serialisable dictionary of the resolved config."""
    return cfg.model_dump(mode="json")
