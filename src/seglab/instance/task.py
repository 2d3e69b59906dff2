"""InstanceTask: the LightningModule of ``task: instance`` and its one inference path.

Both methods go image -> :meth:`InstanceTask.raw` (Mask R-CNN detections, or interior /
boundary probabilities through the semantic :class:`~seglab.inference.predictor.Predictor`)
-> :meth:`InstanceTask.instances` (the thresholds) -> an instance map and scored
detections. Validation, ``seglab evaluate`` and ``seglab predict`` all take this path. The
thresholds are tuned on the validation split at every validation (DSB2018 score) and kept
in the ``thresholds`` buffer, so they travel in the checkpoint.
"""

from __future__ import annotations

import logging
import time

import lightning as L
import numpy as np
import torch

from seglab.config import Config
from seglab.errors import SeglabError
from seglab.inference.predictor import Predictor, run_padded
from seglab.instance.maskrcnn import MaskRCNNModel, build_maskrcnn, detect
from seglab.instance.metrics import (
    InstanceMetrics,
    drop_crowd,
    dsb_score,
    encode_at,
    object_rles,
)
from seglab.instance.targets import THREE_CLASSES, boundary_targets, maskrcnn_target
from seglab.instance.watershed import instances_from_probs, tune_watershed
from seglab.models.registry import build_model
from seglab.training.losses import SegLoss
from seglab.training.task import lr_factor

log = logging.getLogger("seglab")
SCORE_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def method_of(cfg: Config) -> str:
    """``maskrcnn`` or ``boundary`` (default from ``model.name``)."""
    m = cfg.instance.method or ("maskrcnn" if cfg.model.name == "maskrcnn" else "boundary")
    if m == "maskrcnn" and cfg.model.name != "maskrcnn":
        raise SeglabError("instance.method maskrcnn needs model.name: maskrcnn")
    if m == "boundary" and cfg.model.name == "maskrcnn":
        raise SeglabError(
            "instance.method boundary needs a semantic model.name (e.g. unet), not maskrcnn"
        )
    return m


def category_ids(meta: dict) -> list[int]:
    """COCO category id of every class index (0 = background)."""
    return meta.get("category_ids") or list(range(len(meta["classes"])))


class InstanceTask(L.LightningModule):
    def __init__(self, config: dict, meta: dict, pretrained: bool = True) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["pretrained"])
        self.cfg = Config.model_validate(config)
        self.method = method_of(self.cfg)
        ic, m = self.cfg.instance, self.cfg.model
        weights = m.encoder_weights if pretrained else None
        if self.method == "maskrcnn":
            if meta["in_channels"] != 3:
                raise SeglabError("maskrcnn takes RGB images; set data.in_channels: 3")
            self.model = MaskRCNNModel(
                build_maskrcnn(
                    len(meta["classes"]),
                    m.encoder,
                    m.encoder_weights,
                    ic.min_size,
                    ic.max_size,
                    ic.anchor_sizes,
                    ic.detections_per_image,
                    ic.trainable_backbone_layers,
                    meta["mean"],
                    meta["std"],
                    ic.scale,
                    load_weights=pretrained,
                    proposals=ic.proposals,
                )
            )
            self.register_buffer("thresholds", torch.tensor([ic.score_threshold, 0.0]))
        else:
            self.model = build_model(
                m.name,
                3,
                meta["in_channels"],
                meta["mean"],
                meta["std"],
                encoder=m.encoder,
                encoder_weights=weights,
                options=m.options,
            )
            if self.cfg.train.channels_last:
                self.model = self.model.to(memory_format=torch.channels_last)
            cw = self.cfg.loss.class_weights
            if cw is not None and (not isinstance(cw, list) or len(cw) != 3):
                raise SeglabError(
                    "loss.class_weights: the boundary method has 3 classes (background, "
                    "interior, boundary); give 3 weights, e.g. [1, 1, 3]"
                )
            self.loss = SegLoss(self.cfg.loss, 255, cw)
            self.predictor = Predictor.for_model(
                self.model,
                {**meta, "classes": THREE_CLASSES},
                scale=self.cfg.inference.scale,
                precision=self.cfg.train.precision,
                channels_last=self.cfg.train.channels_last,
            )
            self.register_buffer(
                "thresholds", torch.tensor([ic.marker_threshold, ic.foreground_threshold])
            )
        self.last_val: dict | None = None
        self.last_test: dict | None = None
        self._raw: list = []
        self._targets: list = []
        self._t_start = time.monotonic()

    # -- inference ---------------------------------------------------------------------
    @torch.inference_mode()
    def raw(self, image: torch.Tensor):
        """``C x H x W`` uint8 image -> the network's output before thresholds: a list of
        detections (label, score, box, uint8 mask probability inside the box) or uint8
        (interior, boundary) probability maps."""
        self.model.eval()
        if self.method == "maskrcnn":
            return detect(self.model, image)
        p = self.predictor.logits(image[None]).softmax(1)[0]
        return (p[1:3] * 255).round().to(torch.uint8).numpy()

    def objects(self, raw, thresholds: tuple[float, float] | None = None):
        """(H x W int32 instance map with ids 1..N, (class index, score) of each id)."""
        t = thresholds or tuple(float(v) for v in self.thresholds)
        if self.method == "maskrcnn":
            inst, kept = paint_detections(raw, t[0])
            return inst, [(int(d["label"]), float(d["score"])) for d in kept]
        p_int, p_bnd = raw[0] / 255.0, raw[1] / 255.0
        inst, scores = instances_from_probs(p_int, p_bnd, t[0], t[1], self.cfg.instance.min_area)
        return inst, [(1, float(s)) for s in scores]

    def instances(self, raw, thresholds: tuple[float, float] | None = None):
        """(H x W int32 instance map, detections for COCO results: mask, label, score, box).
        Mask R-CNN reports every detection (AP ranks them all); the boundary method its
        objects."""
        inst, objects = self.objects(raw, thresholds)
        if self.method == "maskrcnn":
            return inst, full_detections(raw)
        dets = [
            {"rle": rle, "label": label, "score": score, "box": None}
            for (_, rle), (label, score) in zip(object_rles(inst), objects, strict=True)
        ]
        return inst, dets

    def predict_instances(self, image: np.ndarray):
        """``H x W x C`` uint8 image -> (instance map, detections)."""
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return self.instances(self.raw(x))

    # -- training ----------------------------------------------------------------------
    def on_train_start(self) -> None:
        self._t_start = time.monotonic()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        images = batch["image"]
        n = len(images)
        if self.method == "maskrcnn":
            targets = [
                maskrcnn_target(inst, labels)
                for inst, labels in zip(batch["instances"], batch["labels"], strict=True)
            ]
            losses = self.model(images, targets)
            loss = sum(losses.values())
            for k, v in losses.items():
                self.log(f"train/{k}", v, on_step=False, on_epoch=True, batch_size=n)
        else:
            if len({tuple(im.shape) for im in images}) > 1:
                raise SeglabError(
                    "training images differ in size; set instance.crop (e.g. [256, 256]) "
                    "or train.batch_size: 1"
                )
            x = torch.stack(images).float()
            if self.cfg.train.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = torch.stack(
                [
                    torch.from_numpy(
                        boundary_targets(inst, self.cfg.instance.boundary_width, crowd).astype(
                            np.int64
                        )
                    )
                    for inst, crowd in zip(batch["instances"], batch["crowd"], strict=True)
                ]
            )
            loss = self.loss(run_padded(self.model, x, self.model.stride), y)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=n)
        return loss

    def configure_optimizers(self):
        t = self.cfg.train
        params = [p for p in self.parameters() if p.requires_grad]
        if t.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=t.lr, momentum=0.9, weight_decay=t.weight_decay)
        else:
            opt = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        budget = t.max_minutes * 60 if t.max_minutes else None

        def factor(step: int) -> float:
            progress = step / total
            if budget:
                progress = max(progress, (time.monotonic() - self._t_start) / budget)
            return lr_factor(t.scheduler, progress)

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- validation and test -----------------------------------------------------------
    def _collect(self, batch: dict) -> None:
        for i, image in enumerate(batch["image"]):
            self._raw.append(self.raw(image))
            self._targets.append(
                (batch["name"][i], batch["instances"][i], batch["labels"][i], batch["crowd"][i])
            )

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._collect(batch)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._collect(batch)

    def tune(self) -> dict:
        """Thresholds maximising the mean DSB2018 score on the collected images."""
        targets = [(t[1], t[3]) for t in self._targets]  # (instances, crowd)

        def score_fn(target: tuple, pred: np.ndarray) -> float:
            return dsb_score(target[0], drop_crowd(pred, target[1]))

        if self.method == "maskrcnn":
            best = (float(self.thresholds[0]), -1.0)
            for s in SCORE_GRID:
                preds = [paint_detections(r, s)[0] for r in self._raw]
                score = float(
                    np.mean([score_fn(t, p) for t, p in zip(targets, preds, strict=True)])
                )
                if score > best[1]:
                    best = (s, score)
            self.thresholds.copy_(torch.tensor([best[0], 0.0]))
            return {"score_threshold": best[0]}
        probs = [(r[0] / 255.0, r[1] / 255.0) for r in self._raw]
        m, f, _ = tune_watershed(probs, targets, score_fn, self.cfg.instance.min_area)
        self.thresholds.copy_(torch.tensor([m, f]))
        return {"marker_threshold": m, "foreground_threshold": f}

    def compute_metrics(self, tune: bool) -> dict:
        tuned = self.tune() if tune and self._raw else {}
        metrics = InstanceMetrics(
            category_ids(self.hparams.meta),
            class_agnostic=self.method == "boundary",
            boxes=self.method == "maskrcnn",
        )
        for raw, (name, target, labels, crowd) in zip(self._raw, self._targets, strict=True):
            inst, dets = self.instances(raw)
            metrics.update(name, target, labels, crowd, inst, dets)
        out = metrics.compute()
        out["thresholds"] = tuned or self.threshold_dict()
        out["per_image"] = metrics.per_image
        self.last_metrics = metrics
        self._raw, self._targets = [], []
        return out

    def threshold_dict(self) -> dict:
        t = [float(v) for v in self.thresholds]
        if self.method == "maskrcnn":
            return {"score_threshold": round(t[0], 3)}
        return {"marker_threshold": round(t[0], 3), "foreground_threshold": round(t[1], 3)}

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self._raw, self._targets = [], []
            return
        m = self.compute_metrics(self.cfg.instance.tune)
        self.last_val = {"epoch": self.current_epoch, **m}
        self.log("val/dsb_score", m["dsb_score"], prog_bar=True)
        self.log("val/mask_AP", m["mask_AP"] or 0.0)

    def on_test_epoch_end(self) -> None:
        self.last_test = self.compute_metrics(tune=False)


def paint_detections(raw: dict, score_threshold: float) -> tuple[np.ndarray, list[dict]]:
    """Mask R-CNN detections -> (non-overlapping instance map of those scoring at least
    ``score_threshold``, the detection of each id 1..N). Higher scores are painted last, so
    they win where masks overlap, and an object entirely covered by better ones disappears."""
    inst = np.zeros(raw["shape"], np.int32)
    kept = sorted(
        (d for d in raw["dets"] if d["score"] >= score_threshold), key=lambda d: d["score"]
    )
    for n, d in enumerate(kept, start=1):
        (y0, x0), m = d["offset"], d["prob"] >= 128
        inst[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]][m] = n
    ids = np.unique(inst)
    ids = ids[ids > 0]
    lut = np.zeros(len(kept) + 1, np.int32)
    lut[ids] = np.arange(1, len(ids) + 1)
    return lut[inst], [kept[i - 1] for i in ids]


def full_detections(raw: dict) -> list[dict]:
    """Every Mask R-CNN detection with its image-sized mask as RLE (COCO AP and results)."""
    buf = np.zeros(raw["shape"], np.uint8, order="F")
    return [
        {
            "rle": encode_at(raw["shape"], d["offset"], d["prob"] >= 128, buf),
            "label": d["label"],
            "score": d["score"],
            "box": d["box"],
        }
        for d in raw["dets"]
    ]
