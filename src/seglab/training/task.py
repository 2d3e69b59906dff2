"""SegmentationTask: the LightningModule (model, loss, confusion-matrix metrics, optimiser)."""

from __future__ import annotations

import logging
import math
import time
import warnings
from contextlib import nullcontext

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torchmetrics.classification import MulticlassConfusionMatrix

from seglab.config import Config
from seglab.evaluation.metrics import image_miou, metrics_from_confusion
from seglab.inference.predictor import Predictor, class_argmax, run_padded
from seglab.models.registry import build_model, encoder_of
from seglab.training.losses import SegLoss, distillation_loss
from seglab.training.transfer import init_from

log = logging.getLogger("seglab")

# Lightning's noise is silenced here, where every Lightning path of seglab (CLI, benchmarks,
# library calls of train/evaluate, instance runs) passes, rather than in the CLI alone.
# Lightning 2.6's own code calls a torch API that torch 2.14 deprecates: a warning on every
# training or evaluation run that no seglab user can act on.
warnings.filterwarnings(
    "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
)


class QuietLightning(logging.Filter):
    """Drop Lightning's notices that say nothing to a seglab user: its advertisements (the
    cloud logger at every fit), GPU/TPU availability on a CPU machine, and its note on loading
    the train loader early. seglab's own log says what the run does."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (
            msg.startswith("💡")
            or "litlogger" in msg
            or "available: False" in msg
            or "to estimate number of stepping batches" in msg
        )


for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
    logging.getLogger(_name).addFilter(QuietLightning())


def lr_factor(kind: str, progress: float, warmup: float = 0.05) -> float:
    """Learning-rate multiplier at ``progress`` in [0, 1]: linear warm-up, then cosine or poly."""
    if kind == "none":
        return 1.0
    progress = min(max(progress, 0.0), 1.0)
    if progress < warmup:
        return 0.1 + 0.9 * progress / warmup
    p = (progress - warmup) / (1 - warmup)
    if kind == "cosine":
        return 0.005 + 0.995 * 0.5 * (1 + math.cos(math.pi * p))
    return max(1 - p, 0.0) ** 0.9 + 0.005  # poly


def _channels_last_grad(grad: torch.Tensor) -> torch.Tensor:
    if grad.is_contiguous() or grad.is_contiguous(memory_format=torch.channels_last):
        return grad
    return grad.contiguous(memory_format=torch.channels_last)


class ChannelsLastUpsampleGrads(TorchFunctionMode):
    """Training forward with channels_last: the gradient reaching an ``F.interpolate`` is made
    channels_last-contiguous first.

    A U-Net decoder upsamples and then concatenates with the skip connection, so the
    gradient that reaches the upsampling is a channel slice of the concatenation's gradient.
    PyTorch's CPU ``upsample_nearest2d_backward`` (2.14) turns such a strided tensor into
    NCHW with a slow transposing copy. Copying it to channels_last first is cheap and gives
    bit-identical gradients; a U-Net-ResNet18 step at 256x256, batch 8, gets 6% faster
    (``benchmarks/train_speed.py --breakdown``). Gradients that are already dense in either
    layout pass untouched. Upstream, pytorch/pytorch#34812 (open) is the nearest report: the
    upsampling backward kernels do not follow channels_last."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is F.interpolate and isinstance(out, torch.Tensor) and out.requires_grad:
            out.register_hook(_channels_last_grad)
        return out


def gather_dict(part: dict) -> dict:
    """Under torch.distributed, the union of every process's ``part`` (each holds its shard
    of the data); otherwise ``part`` itself."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return part
    parts: list[dict | None] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, part)
    return {k: v for p in parts for k, v in p.items()}


class SegmentationTask(L.LightningModule):
    """Trains and evaluates one segmentation model.

    ``config`` is the resolved config dict and ``meta`` the dataset definition's meta
    (classes, colours, ignore index, channels, normalisation); both are saved in every
    checkpoint, which is therefore enough to rebuild the model on its own.
    """

    def __init__(
        self,
        config: dict,
        meta: dict,
        class_weights: list[float] | None = None,
        pretrained: bool = True,
        teacher: bool = True,
    ) -> None:
        """``pretrained`` False skips encoder weights and ``init_from`` (the weights come from
        a checkpoint: evaluation, ``--resume``); ``teacher`` False skips the distillation
        teacher (evaluation)."""
        super().__init__()
        self.save_hyperparameters(ignore=["pretrained", "teacher"])
        self.cfg = Config.model_validate(config)
        k = len(meta["classes"])
        m = self.cfg.model
        self.model = build_model(
            m.name,
            k,
            meta["in_channels"],
            meta["mean"],
            meta["std"],
            encoder=m.encoder,
            encoder_weights=m.encoder_weights if pretrained else None,
            options=m.options,
        )
        if pretrained and m.init_from is not None:
            init_from(self.model, m.init_from)
        self._frozen = m.freeze_encoder
        if self.cfg.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.loss = SegLoss(self.cfg.loss, meta["ignore_index"], class_weights)
        self.teacher = self._load_teacher(meta) if teacher and self.cfg.distill else None
        inf = self.cfg.inference
        self.predictor = Predictor.for_model(
            self.model,
            meta,
            scale=inf.scale,
            precision=self.cfg.train.precision,
            channels_last=self.cfg.train.channels_last,
            max_pixels=inf.max_pixels,
            tile=inf.tile,
            overlap=inf.overlap,
            batch_size=inf.batch_size,
        )
        self.val_cm = MulticlassConfusionMatrix(
            k, ignore_index=meta["ignore_index"], validate_args=False
        )
        self.last_val: dict | None = None
        self.last_test: dict | None = None
        self.per_image: dict[int, float | None] | None = None  # index -> mIoU, when asked
        self._t_batch: float | None = None
        self._t_end: float | None = None
        self._t_begin, self._wait, self._busy = 0.0, 0.0, 0.0
        self._img_s: float | None = None
        self._t_start = time.monotonic()
        self._seconds_before = 0.0  # training time before a --resume, from the checkpoint

    @property
    def train_seconds(self) -> float:
        """Wall-clock training time of the run so far, across ``--resume``: the time budget
        and the learning-rate schedule that follows it continue where the run stopped."""
        return self._seconds_before + time.monotonic() - self._t_start

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["seglab_train_seconds"] = self.train_seconds

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._seconds_before = float(checkpoint.get("seglab_train_seconds", 0.0))

    def _load_teacher(self, meta: dict) -> list:
        """The frozen teacher behind its own input policy (kept in a list: not a submodule,
        so it is neither trained nor saved in checkpoints)."""
        from seglab.errors import SeglabError
        from seglab.inference.predictor import load_checkpoint

        source = self.cfg.distill.teacher
        try:
            teacher, tconfig, tmeta = load_checkpoint(source)
        except SeglabError as err:
            raise SeglabError(f"distill.teacher: {err}") from None
        for key, what in (
            ("classes", "predicts"),
            ("in_channels", "takes input channels"),
            ("intensity_range", "reads deep images with data.intensity_range"),
        ):
            if tmeta.get(key) != meta.get(key):
                raise SeglabError(
                    f"distill.teacher {source} {what} {tmeta[key]}, this data set has "
                    f"{meta[key]}; use a teacher trained on the same {key.replace('_', ' ')}"
                )
        for p in teacher.parameters():
            p.requires_grad_(False)
        log.info("distilling from %s", source)
        # training batches are already at this run's inference.scale: the teacher resizes
        # them to its own scale of the original image
        predictor = Predictor.for_model(
            teacher.eval(),
            tmeta,
            scale=tconfig["inference"]["scale"] / self.cfg.inference.scale,
            precision=self.cfg.train.precision,
            channels_last=self.cfg.train.channels_last,
        )
        return [predictor]

    # -- training ---------------------------------------------------------------------
    def on_train_start(self) -> None:
        self._t_start = time.monotonic()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        x = batch["image"].float()
        if self.cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with ChannelsLastUpsampleGrads() if self.cfg.train.channels_last else nullcontext():
            logits = run_padded(self.model, x, self.model.stride)  # crops need not fit the stride
        loss = self.loss(logits, batch["mask"])
        if self.teacher is not None:
            d = self.cfg.distill
            with torch.no_grad():
                soft = self.teacher[0].logits(x)  # at the teacher's own scale of the image
            kd = distillation_loss(
                logits,
                soft,
                batch["mask"],
                self.hparams.meta["ignore_index"],
                d.temperature,
                self.loss.weights if d.class_weighted else None,
            )
            self.log("train/distill", kd, on_step=False, on_epoch=True, batch_size=x.shape[0])
            loss = (1 - d.weight) * loss + d.weight * kd
        now = time.monotonic()
        if self._t_batch is not None:
            rate = x.shape[0] * self.trainer.world_size / max(now - self._t_batch, 1e-6)
            self._img_s = rate if self._img_s is None else 0.9 * self._img_s + 0.1 * rate
        self._t_batch = now
        self.log(
            "train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=x.shape[0]
        )
        if self._img_s is not None:
            self.log("img_s", self._img_s, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        now = time.monotonic()
        if self._t_end is not None:  # time since the last step ended: waiting for data
            self._wait += now - self._t_end
        self._t_begin = now

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self._t_end = time.monotonic()
        self._busy += self._t_end - self._t_begin

    @property
    def data_wait_fraction(self) -> float | None:
        """Share of this epoch's training time spent waiting for the data loader."""
        total = self._wait + self._busy
        return self._wait / total if total > 0 else None

    def on_train_epoch_start(self) -> None:
        self._t_batch = None
        self._t_end, self._wait, self._busy = None, 0.0, 0.0
        m = self.cfg.model
        if (
            self._frozen
            and m.unfreeze_at_epoch is not None
            and self.current_epoch >= m.unfreeze_at_epoch
        ):
            self._frozen = False
            log.info("epoch %d: encoder unfrozen", self.current_epoch)
        encoder = encoder_of(self.model.net)
        for p in encoder.parameters():
            p.requires_grad_(not self._frozen)
        # frozen batch-norm statistics too; unfrozen, back to training mode (Lightning keeps
        # a submodule's eval mode across validation and epochs)
        encoder.train(not self._frozen)

    def configure_optimizers(self):
        t = self.cfg.train
        enc_ids = {id(p) for p in encoder_of(self.model.net).parameters()}
        groups = [
            {
                "params": [p for p in self.parameters() if id(p) in enc_ids],
                "lr": t.encoder_lr or t.lr,
            },
            {"params": [p for p in self.parameters() if id(p) not in enc_ids], "lr": t.lr},
        ]
        if t.optimizer == "sgd":
            opt = torch.optim.SGD(
                groups, lr=t.lr, momentum=0.9, weight_decay=t.weight_decay, nesterov=True
            )
        else:
            # fused: one kernel per step for all parameters instead of a loop over them; in
            # benchmarks/train_speed.py the gain is within run-to-run noise
            opt = torch.optim.AdamW(groups, lr=t.lr, weight_decay=t.weight_decay, fused=True)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        budget = t.max_minutes * 60 if t.max_minutes else None

        last: dict[int, float] = {}  # step -> factor: one clock reading for all param groups

        def factor(step: int) -> float:
            if step in last:
                return last[step]
            progress = step / total
            if budget:  # follow the wall-clock budget so the schedule ends when time does
                # rank 0's clock on every DDP process (every rank steps the scheduler at the
                # same step): with its own clock each replica would step with its own LR
                # and the replicas, never synchronised again, would drift apart
                seconds = float(self.trainer.strategy.broadcast(self.train_seconds))
                progress = max(progress, seconds / budget)
            last.clear()
            last[step] = lr_factor(t.scheduler, progress)
            return last[step]

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- validation and test: the Predictor's path, one confusion matrix ----------------
    def _update(self, batch: dict) -> None:
        images, masks = batch["image"], batch["mask"]
        groups: dict[tuple, list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(tuple(im.shape), []).append(i)
        for idx in groups.values():
            x = torch.stack([images[i] for i in idx])
            if self.predictor.tiles(*x.shape[-2:]):  # large images: in tiles, as predict does
                masks_hw = [self.predictor.predict(im.permute(1, 2, 0).numpy()) for im in x]
                pred = torch.from_numpy(np.stack(masks_hw)).long()
            else:
                pred = class_argmax(self.predictor.logits(x))
            if self.per_image is not None:  # for the report's best / worst gallery
                for j, i in enumerate(idx):
                    self.per_image[int(batch["index"][i])] = image_miou(
                        masks[i].numpy(),
                        pred[j].numpy(),
                        self.predictor.num_classes,
                        self.hparams.meta["ignore_index"],
                    )
            self.val_cm.update(pred, torch.stack([masks[i] for i in idx]))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._update(batch)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._update(batch)

    def _epoch_metrics(self) -> dict:
        cm = self.val_cm.compute().cpu().numpy()  # summed over processes under DDP
        self.val_cm.reset()
        metrics = metrics_from_confusion(cm, self.hparams.meta["classes"])
        metrics["confusion_matrix"] = cm.tolist()
        return metrics

    def on_validation_epoch_end(self) -> None:
        metrics = self._epoch_metrics()
        if self.trainer.sanity_checking:
            return
        self.last_val = {"epoch": self.current_epoch, **metrics}
        miou = metrics["mIoU"] if metrics["mIoU"] is not None else 0.0
        self.log("val/mIoU", miou, prog_bar=True)
        self.log("val/pixel_accuracy", metrics["pixel_accuracy"] or 0.0)

    def on_test_epoch_end(self) -> None:
        self.last_test = self._epoch_metrics()
        if self.per_image is not None:  # every process's images, for the report's gallery
            self.per_image = gather_dict(self.per_image)
