"""``train()``: build data, model and Lightning Trainer; write the run directory."""

from __future__ import annotations

import csv
import io
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    EMAWeightAveraging,
    ModelCheckpoint,
)

from seglab.config import Config, config_to_dict
from seglab.data.dataset import DatasetDefinition, class_weights_from
from seglab.data.module import SegDataModule
from seglab.errors import SeglabError
from seglab.inference.predictor import resolve_precision
from seglab.runs import file_log, held_log, new_run_dir, write_atomic, write_json, write_yaml
from seglab.training.task import SegmentationTask

log = logging.getLogger("seglab")
RUN_ENV = "SEGLAB_RUN_DIR"  # shared with DDP worker processes, which re-run the command


class RunRecorder(Callback):
    """Per-epoch metrics to ``metrics.csv`` and ``metrics.json`` in the run directory."""

    def __init__(self, run_dir: Path, classes: list[str]) -> None:
        self.run_dir = run_dir
        self.classes = classes
        self.rows: list[dict] = []
        f = run_dir / "metrics.json"
        if f.is_file():  # resumed run: keep earlier epochs
            import json

            self.rows = json.loads(f.read_text())

    def on_train_epoch_end(self, trainer: L.Trainer, task: SegmentationTask) -> None:
        if trainer.global_rank != 0:
            return
        cm = trainer.callback_metrics
        row: dict = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "train_loss": float(cm["train/loss_epoch"]) if "train/loss_epoch" in cm else None,
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
            "images_per_s": task._img_s,
            "data_wait_fraction": task.data_wait_fraction,
            "elapsed_s": round(task.train_seconds, 1),
        }
        val = (
            task.last_val
            if task.last_val and task.last_val["epoch"] == trainer.current_epoch
            else None
        )
        row["val_mIoU"] = val["mIoU"] if val else None
        row["val_pixel_accuracy"] = val["pixel_accuracy"] if val else None
        row["val_iou"] = {c: val["per_class"][c]["iou"] for c in self.classes} if val else None
        self.rows.append(row)
        write_json(self.run_dir / "metrics.json", self.rows)
        buf = io.StringIO()
        cols = [k for k in row if k != "val_iou"] + [f"val_iou/{c}" for c in self.classes]
        w = csv.DictWriter(buf, fieldnames=cols)
        w.writeheader()
        for r in self.rows:
            flat = {k: v for k, v in r.items() if k != "val_iou"}
            for c in self.classes:
                flat[f"val_iou/{c}"] = r["val_iou"][c] if r.get("val_iou") else None
            w.writerow(flat)
        write_atomic(self.run_dir / "metrics.csv", buf.getvalue())
        miou = f"{row['val_mIoU']:.4f}" if row["val_mIoU"] is not None else "-"
        log.info(
            "epoch %d: train_loss %.4f val_mIoU %s images/s %s data wait %s",
            row["epoch"],
            row["train_loss"] or float("nan"),
            miou,
            f"{row['images_per_s']:.1f}" if row["images_per_s"] else "-",
            f"{100 * row['data_wait_fraction']:.0f}%" if row["data_wait_fraction"] else "-",
        )


class TimeBudget(Callback):
    """Stop at the end of the last epoch that fits in ``minutes`` of wall-clock time."""

    def __init__(self, minutes: float) -> None:
        self.budget = minutes * 60
        self.t0 = time.monotonic()
        self.epochs = 0

    def on_train_start(self, trainer, task) -> None:
        self.t0 = time.monotonic()

    def on_train_epoch_end(self, trainer, task) -> None:
        self.epochs += 1
        per_epoch = (time.monotonic() - self.t0) / self.epochs
        # the run's time (across --resume), decided once for all DDP processes
        stop = trainer.strategy.broadcast(task.train_seconds + per_epoch > self.budget)
        if stop:
            log.info("time budget: stopping after %.1f min", task.train_seconds / 60)
            trainer.should_stop = True


def averaging(cfg: Config) -> list[Callback]:
    """``train.ema_decay``: Lightning's EMA callback. It validates with the averaged weights
    and saves them as the checkpoint's ``state_dict`` (the raw weights stay in the checkpoint
    for ``--resume``), so evaluate, predict and export use the average without knowing."""
    return [EMAWeightAveraging(decay=cfg.train.ema_decay)] if cfg.train.ema_decay else []


def _trainer(cfg: Config, run_dir: Path, precision: str, callbacks: list) -> L.Trainer:
    t = cfg.train
    distributed = t.devices * t.num_nodes > 1
    return L.Trainer(
        accelerator="cpu",
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy="ddp_find_unused_parameters_true" if distributed else "auto",
        precision="bf16-mixed" if precision == "bf16" else "32-true",
        max_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        check_val_every_n_epoch=t.val_every,
        num_sanity_val_steps=0,
        logger=False,
        default_root_dir=run_dir,
        callbacks=callbacks,
        use_distributed_sampler=False,
        log_every_n_steps=5,
        enable_model_summary=False,
    )


@contextmanager
def _run_env(run_dir: Path) -> Iterator[None]:
    """Name the run directory in the environment while training: DDP workers started by
    ``trainer.fit`` re-run the command and must write into the same run."""
    previous = os.environ.get(RUN_ENV)
    os.environ[RUN_ENV] = str(run_dir)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(RUN_ENV, None)
        else:
            os.environ[RUN_ENV] = previous


def _callbacks(cfg: Config, run_dir: Path, classes: list[str]) -> list[Callback]:
    """Checkpoints (best by validation mIoU first), the run's records and the stop rules."""
    callbacks: list[Callback] = [
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="best",
            monitor="val/mIoU",
            mode="max",
            save_top_k=1,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        ),
        # Lightning's save_last only refreshes last.ckpt when best.ckpt is written; --resume
        # needs the latest epoch, so a second checkpoint writes it after every epoch
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="last",
            save_top_k=1,
            save_on_train_epoch_end=True,
            enable_version_counter=False,
        ),
        RunRecorder(run_dir, classes),
    ]
    if cfg.train.early_stopping_patience:  # epochs; Lightning counts validations
        checks = -(-cfg.train.early_stopping_patience // cfg.train.val_every)
        callbacks.append(EarlyStopping("val/mIoU", mode="max", patience=checks))
    if cfg.train.max_minutes:
        callbacks.append(TimeBudget(cfg.train.max_minutes))
    return callbacks + averaging(cfg)


def train(
    cfg: Config,
    runs_dir: Path = Path("runs"),
    resume: Path | None = None,
    callbacks: list[Callback] | None = None,
) -> Path:
    """Train ``cfg``; returns the run directory. ``resume`` continues a run from last.ckpt;
    ``callbacks`` are extra Lightning callbacks (e.g. for timing). ``task: instance``
    configs train through :func:`seglab.instance.run.train_instance`."""
    if cfg.task == "instance":
        from seglab.instance.run import train_instance

        return train_instance(cfg, runs_dir, resume, callbacks)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    definition = DatasetDefinition.from_config(cfg.data)
    cfg = cfg.model_copy(deep=True)  # the resolved config records the data set as used
    cfg.data.classes, cfg.data.colors = definition.classes, definition.colors
    cfg.data.ignore_index, cfg.data.in_channels = definition.ignore_index, definition.in_channels
    # Read and check all data before creating anything on disk.
    dm = SegDataModule(cfg, definition, "train", "val")
    weights = cfg.loss.class_weights
    if isinstance(weights, str):  # median_frequency or inverse_log
        weights = [round(float(w), 4) for w in class_weights_from(dm.train_set, weights)]
    elif weights is not None and len(weights) != definition.num_classes:
        raise SeglabError(
            f"loss.class_weights has {len(weights)} values for "
            f"{definition.num_classes} classes; give one weight per class"
        )
    # The model (and a distillation teacher) is built before the run directory: a bad model
    # setting or teacher stops with nothing written
    with held_log() as setup_log:
        # resumed: the weights come from last.ckpt, so encoder_weights and init_from are not
        # fetched again (their files may be gone by now)
        task = SegmentationTask(config_to_dict(cfg), definition.to_meta(), weights, resume is None)

    ckpt_path = None
    if resume is not None:
        run_dir = resume
        ckpt_path = run_dir / "checkpoints" / "last.ckpt"
        if not ckpt_path.is_file():
            raise SeglabError(f"cannot resume {run_dir}: {ckpt_path} not found")
    elif os.environ.get(RUN_ENV):
        run_dir = Path(os.environ[RUN_ENV])
    else:
        run_dir = new_run_dir(runs_dir, cfg.name)
    rank0 = (
        int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0
    )
    precision = resolve_precision(cfg.train.precision)
    callbacks = _callbacks(cfg, run_dir, definition.classes) + list(callbacks or [])
    with _run_env(run_dir), file_log(run_dir / "train.log" if rank0 else None, setup_log):
        if rank0:
            write_yaml(run_dir / "config.yaml", config_to_dict(cfg))
            log.info("run directory: %s", run_dir)
            log.info(
                "precision: %s%s (CPU bf16 support: %s)",
                precision,
                " + channels_last" if cfg.train.channels_last else "",
                "yes" if precision == "bf16" else "no or not requested",
            )
            if isinstance(cfg.loss.class_weights, str):
                log.info("%s class weights: %s", cfg.loss.class_weights, weights)
        trainer = _trainer(cfg, run_dir, precision, callbacks)
        trainer.fit(task, datamodule=dm, ckpt_path=ckpt_path)
    if trainer.global_rank == 0:
        best = callbacks[0]
        summary = {
            "run_dir": str(run_dir),
            "best_checkpoint": str(best.best_model_path) if best.best_model_path else None,
            "best_val_mIoU": float(best.best_model_score)
            if best.best_model_score is not None
            else None,
            "epochs": trainer.current_epoch,
            "train_seconds": round(task.train_seconds, 1),
            "precision": precision,
            "channels_last": cfg.train.channels_last,
            "torch_threads": torch.get_num_threads(),
            "class_weights": weights,
        }
        write_json(run_dir / "summary.json", summary)
    return run_dir
