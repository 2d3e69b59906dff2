"""``train``, ``evaluate`` and ``predict`` for ``task: instance`` (called by seglab's own
``train`` / ``evaluate`` / CLI ``predict`` when the config or checkpoint is an instance one)."""

from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.utils.data import DataLoader

from seglab.config import Config, config_to_dict
from seglab.data.dataset import DatasetDefinition
from seglab.data.io import adapt_channels, read_image
from seglab.data.module import auto_workers
from seglab.errors import SeglabError
from seglab.inference.backends import resolve_precision
from seglab.inference.predict import expand_inputs, write_png
from seglab.inference.predictor import read_checkpoint, resolve_checkpoint
from seglab.instance.data import (
    InstanceDataset,
    annotation_problems,
    check_format,
    list_collate,
)
from seglab.instance.task import InstanceTask, category_ids, method_of
from seglab.runs import file_log, new_run_dir, write_atomic, write_json, write_yaml

log = logging.getLogger("seglab")


def instance_meta(definition: DatasetDefinition) -> dict:
    """The dataset meta plus the COCO category id of every class index."""
    meta = definition.to_meta()
    if definition.format == "coco":
        from seglab.data.formats import coco

        for split in ("train", "val"):
            f = coco._annotation_file(definition.root, split, definition.splits.get(split))
            if f.is_file():
                meta["category_ids"] = [0, *sorted(coco.load_coco(f).cats)]
                break
    return meta


def _problems(definition: DatasetDefinition, datasets: dict[str, InstanceDataset]) -> dict:
    out = {}
    for split, ds in datasets.items():
        p = annotation_problems(definition, split)
        p["images_without_objects"] = ds.empty_images
        out[split] = p
    return out


class InstanceRecorder(Callback):
    """Per-epoch ``metrics.json`` / ``metrics.csv``: loss, DSB score, mask AP, count error."""

    COLS = ("epoch", "step", "train_loss", "val_dsb_score", "val_mask_AP", "val_mask_AP50")
    COLS += ("val_mean_abs_count_error", "thresholds", "elapsed_s")

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.rows: list[dict] = []
        self.t0 = time.monotonic()

    def on_train_epoch_end(self, trainer: L.Trainer, task: InstanceTask) -> None:
        cm = trainer.callback_metrics
        val = (
            task.last_val
            if task.last_val and task.last_val["epoch"] == trainer.current_epoch
            else {}
        )
        row = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "train_loss": float(cm["train/loss_epoch"]) if "train/loss_epoch" in cm else None,
            "val_dsb_score": val.get("dsb_score"),
            "val_mask_AP": val.get("mask_AP"),
            "val_mask_AP50": val.get("mask_AP50"),
            "val_mean_abs_count_error": val.get("mean_abs_count_error"),
            "thresholds": val.get("thresholds"),
            "elapsed_s": round(time.monotonic() - self.t0, 1),
        }
        self.rows.append(row)
        write_json(self.run_dir / "metrics.json", self.rows)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.COLS)
        w.writeheader()
        w.writerows(self.rows)
        write_atomic(self.run_dir / "metrics.csv", buf.getvalue())
        log.info(
            "epoch %d: train_loss %.4f val DSB %s mask AP %s",
            row["epoch"],
            row["train_loss"] or float("nan"),
            f"{row['val_dsb_score']:.4f}" if row["val_dsb_score"] is not None else "-",
            f"{row['val_mask_AP']:.4f}" if row["val_mask_AP"] is not None else "-",
        )


class FinalCheckpoint(Callback):
    """``last.ckpt`` = the final weights, also when the time budget stops training between
    validations (Lightning then saves nothing after the last validation)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_end(self, trainer: L.Trainer, task: InstanceTask) -> None:
        trainer.save_checkpoint(self.path)


def train_instance(
    cfg: Config,
    runs_dir: Path = Path("runs"),
    resume: Path | None = None,
    callbacks: list[Callback] | None = None,
) -> Path:
    """Train an instance model (Mask R-CNN or boundary U-Net); returns the run directory."""
    from seglab.training.train import TimeBudget, averaging

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    definition = DatasetDefinition.from_config(cfg.data)
    check_format(definition)
    cfg = cfg.model_copy(deep=True)
    cfg.data.classes, cfg.data.colors = definition.classes, definition.colors
    cfg.data.ignore_index, cfg.data.in_channels = definition.ignore_index, definition.in_channels
    method = method_of(cfg)
    if cfg.train.devices * cfg.train.num_nodes > 1:
        raise SeglabError("task: instance trains in one process; set train.devices: 1")
    meta = instance_meta(definition)
    train_set = InstanceDataset(
        definition,
        "train",
        crop=cfg.instance.crop,
        augment=True,
        fraction=cfg.data.train_fraction,
        seed=cfg.seed,
    )
    val_set = InstanceDataset(definition, "val")
    problems = _problems(definition, {"train": train_set, "val": val_set})
    task = InstanceTask(config_to_dict(cfg), meta)  # weights errors stop before the run dir
    ckpt_path = None
    if resume is not None:
        run_dir, ckpt_path = resume, resume / "checkpoints" / "last.ckpt"
        if not ckpt_path.is_file():
            raise SeglabError(f"cannot resume {run_dir}: {ckpt_path} not found")
    else:
        run_dir = new_run_dir(runs_dir, cfg.name)
    with file_log(run_dir / "train.log"):
        precision = resolve_precision(cfg.train.precision) if method == "boundary" else "fp32"
        write_yaml(run_dir / "config.yaml", config_to_dict(cfg))
        log.info("run directory: %s (instance, %s, precision %s)", run_dir, method, precision)
        for split, p in problems.items():
            if any(p.values()):
                log.info("split %s: bad annotations handled: %s", split, p)
        workers = auto_workers(cfg.train.num_workers)
        train_loader = DataLoader(
            train_set,
            batch_size=cfg.train.batch_size,
            shuffle=True,
            num_workers=workers,
            persistent_workers=workers > 0,
            drop_last=len(train_set) > cfg.train.batch_size,
            collate_fn=list_collate,
        )
        val_loader = DataLoader(val_set, batch_size=1, collate_fn=list_collate)
        best = ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="best",
            monitor="val/dsb_score",
            mode="max",
            save_last=True,
            save_top_k=1,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        )
        cbs: list[Callback] = [
            best,
            InstanceRecorder(run_dir),
            FinalCheckpoint(run_dir / "checkpoints" / "last.ckpt"),
        ]
        if cfg.train.max_minutes:
            cbs.append(TimeBudget(cfg.train.max_minutes))
        cbs += averaging(cfg)
        trainer = L.Trainer(
            accelerator="cpu",
            devices=1,
            precision="bf16-mixed" if precision == "bf16" else "32-true",
            max_epochs=cfg.train.epochs,
            max_steps=cfg.train.max_steps or -1,
            check_val_every_n_epoch=cfg.train.val_every,
            num_sanity_val_steps=0,
            logger=False,
            default_root_dir=run_dir,
            callbacks=cbs + list(callbacks or []),
            log_every_n_steps=5,
            enable_model_summary=False,
        )
        t0 = time.monotonic()
        trainer.fit(task, train_loader, val_loader, ckpt_path=ckpt_path)
    write_json(
        run_dir / "summary.json",
        {
            "run_dir": str(run_dir),
            "task": "instance",
            "method": method,
            "best_checkpoint": str(best.best_model_path) if best.best_model_path else None,
            "best_val_dsb_score": float(best.best_model_score)
            if best.best_model_score is not None
            else None,
            "epochs": trainer.current_epoch,
            "train_seconds": round(time.monotonic() - t0, 1),
            "precision": precision,
            "annotation_problems": problems,
        },
    )
    return run_dir


def is_instance_checkpoint(run_or_ckpt: str | Path) -> bool:
    """Whether a run directory or checkpoint holds a ``task: instance`` model."""
    p = Path(run_or_ckpt)
    if (p / "seglab.json").is_file():
        return False
    if p.is_dir() and (p / "config.yaml").is_file():
        import yaml

        return (yaml.safe_load((p / "config.yaml").read_text()) or {}).get("task") == "instance"
    ckpt = read_checkpoint(resolve_checkpoint(p))
    return ckpt["hyper_parameters"]["config"].get("task") == "instance"


def no_rpn(source: str | Path) -> SeglabError:
    """The error for ``--proposals`` on a run that has no region proposal network."""
    return SeglabError(f"{source}: --proposals applies to Mask R-CNN runs only")


def load_instance_task(
    run_or_ckpt: str | Path, proposals: int | None = None
) -> tuple[InstanceTask, Path]:
    """The trained task in eval mode; ``proposals`` replaces the run's
    ``instance.proposals`` (Mask R-CNN's RPN at inference; the weights do not depend on it)."""
    path = resolve_checkpoint(run_or_ckpt)
    ckpt = read_checkpoint(path)
    hp = ckpt["hyper_parameters"]
    config = hp["config"]
    if proposals is not None:
        config = {**config, "instance": {**(config.get("instance") or {}), "proposals": proposals}}
    task = InstanceTask(config, hp["meta"], pretrained=False)
    if proposals is not None and task.method != "maskrcnn":
        raise no_rpn(path)
    try:
        task.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        raise SeglabError(
            f"checkpoint {path} does not match its model config ({lines[-1][:160]})"
        ) from None
    return task.eval(), path


class InstancePredictor:
    """An instance model behind the interface ``seglab serve`` uses for semantic predictors
    (``meta``, ``backend.name`` / ``.precision``, ``scale``, ``adapt``, ``predict``);
    :meth:`predict` gives (H x W int32 instance map with ids 1..N, (class index, score) of
    each id). Instance models run on PyTorch: the watershed or Mask R-CNN's box-wise mask
    pasting is not part of an exported graph."""

    kind = "instance"
    flips: tuple = ()
    scales: tuple = (1.0,)

    def __init__(self, task: InstanceTask) -> None:
        self.task = task
        self.meta = task.hparams.meta
        inner = getattr(task, "predictor", None)  # the boundary method's semantic Predictor
        self.backend = SimpleNamespace(
            name="torch", precision=inner.backend.precision if inner is not None else "fp32"
        )
        self.scale = float(inner.scale) if inner is not None else 1.0

    @classmethod
    def open(cls, run_or_ckpt: str | Path, backend: str | None = None) -> InstancePredictor:
        if backend not in (None, "auto", "torch"):
            raise SeglabError(
                f"{run_or_ckpt} is an instance model, which runs on torch only; "
                f"drop --backend {backend} (or use --backend torch)"
            )
        return cls(load_instance_task(run_or_ckpt)[0])

    def adapt(self, image: np.ndarray, where: str | Path = "<image>") -> np.ndarray:
        return adapt_channels(image, self.meta["in_channels"], where)

    def predict(self, image: np.ndarray, where: str | Path = "<image>"):
        x = torch.from_numpy(np.ascontiguousarray(self.adapt(image, where).transpose(2, 0, 1)))
        return self.task.objects(self.task.raw(x))


def evaluate_instance(
    run_or_ckpt: str | Path,
    split: str = "val",
    data_root: Path | None = None,
    out: Path | None = None,
    tune: bool = False,
    proposals: int | None = None,
) -> tuple[dict, Path]:
    """COCO mask AP (+ box AP for Mask R-CNN), DSB2018 score and counts on ``split``.

    ``tune``: first tune the thresholds on ``split`` itself (as validation does), instead of
    using the checkpoint's. ``proposals``: see :func:`load_instance_task`.

    Writes metrics.json, per_image.csv (DSB score, objects, predicted, count error) and
    results.json (COCO results: RLE masks and scores) to ``out`` (default RUN/eval/<split>)."""
    task, ckpt_path = load_instance_task(run_or_ckpt, proposals)
    cfg = task.cfg.model_copy(deep=True)
    if data_root is not None:
        cfg.data.root = data_root
    definition = DatasetDefinition.from_config(cfg.data)
    if definition.classes != task.hparams.meta["classes"]:
        raise SeglabError(
            f"the data set's classes differ from the checkpoint's "
            f"({len(definition.classes)} vs {len(task.hparams.meta['classes'])}); "
            "evaluate on matching data"
        )
    ds = InstanceDataset(definition, split)
    problems = _problems(definition, {split: ds})[split]
    t0 = time.monotonic()
    for i in range(len(ds)):
        task._collect(list_collate([ds[i]]))
    metrics = task.compute_metrics(tune=tune)
    per_image = metrics.pop("per_image")
    metrics.update(
        {
            "split": split,
            "method": task.method,
            "checkpoint": str(ckpt_path),
            "seconds": round(time.monotonic() - t0, 1),
            "annotation_problems": problems,
        }
    )
    if task.method == "maskrcnn":  # the RPN's own setting (the run's or --proposals)
        metrics["proposals"] = task.model.net.rpn.post_nms_top_n()
    if out is None:
        run_dir = ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else None
        out = new_run_dir((run_dir or ckpt_path.parent) / "eval", split)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", metrics)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(per_image[0]) if per_image else ["image"])
    w.writeheader()
    w.writerows(per_image)
    write_atomic(out / "per_image.csv", buf.getvalue())
    results = task.last_metrics.results
    refs = [it.ref for it in ds.pairs]
    if definition.format == "coco":  # the JSON's own image ids
        results = [{**r, "image_id": refs[r["image_id"] - 1]} for r in results]
    write_json(out / "results.json", results)
    return metrics, out


def instance_colors(n: int, seed: int = 0) -> np.ndarray:
    """``n + 1`` RGB colours: black for background, then distinct bright colours (hues
    spaced by the golden ratio, alternating saturation / value)."""
    out = np.zeros((n + 1, 3), np.uint8)
    for i in range(1, n + 1):
        h = ((i + seed) * 0.618033988749895) % 1.0
        s, v = (0.9, 1.0) if i % 2 else (0.6, 0.85)
        hsv = np.uint8([[[round(h * 179), round(s * 255), round(v * 255)]]])
        out[i] = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return out


def instance_overlay(image: np.ndarray, inst: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Each instance in its own colour over the image, with its outline fully opaque."""
    from skimage.segmentation import find_boundaries

    rgb = image[:, :, :3] if image.shape[2] >= 3 else np.repeat(image[:, :, :1], 3, axis=2)
    colors = instance_colors(int(inst.max()))[inst]
    fg = (inst > 0)[:, :, None]
    out = np.where(fg, rgb * (1 - alpha) + colors * alpha, rgb)
    edge = find_boundaries(inst, mode="inner")
    out[edge] = colors[edge]
    return out.round().clip(0, 255).astype(np.uint8)


def predict_instance(
    run_or_ckpt: str | Path,
    inputs: list[Path],
    out: Path,
    alpha: float = 0.5,
    progress=None,
    proposals: int | None = None,
) -> list[Path]:
    """Per image ``<stem>_instances.png`` (16-bit ids, 0 background) and
    ``<stem>_overlay.png``; ``results.json`` (COCO results, image ids 1.. in file order with
    ``file_name``) for all. Returns the instance PNG paths. Unreadable images are skipped
    and reported together at the end (an error), after every readable one was written."""
    task, _ = load_instance_task(run_or_ckpt, proposals)
    files = expand_inputs(inputs, out)
    out.mkdir(parents=True, exist_ok=True)
    meta = task.hparams.meta
    cats = category_ids(meta)
    results, written, failed = [], [], []
    for n, f in enumerate(progress(files) if progress else files, start=1):
        try:
            image = adapt_channels(
                read_image(f, meta.get("intensity_range")), meta["in_channels"], f
            )
            inst, dets = task.predict_instances(image)
            if inst.max() > 65535:
                raise SeglabError(f"{f}: {inst.max()} instances do not fit a 16-bit PNG")
        except SeglabError as err:
            failed.append(str(err))
            continue
        path = out / f"{f.stem}_instances.png"
        write_png(path, inst.astype(np.uint16))
        write_png(out / f"{f.stem}_overlay.png", instance_overlay(image, inst, alpha))
        for d in dets:
            results.append(
                {
                    "image_id": n,
                    "file_name": f.name,
                    "category_id": cats[d["label"]],
                    "segmentation": d["rle"],
                    "score": round(float(d["score"]), 5),
                }
            )
        written.append(path)
    write_json(out / "results.json", results)
    if failed:
        raise SeglabError(
            f"predicted {len(written)} of {len(files)} images into {out}; "
            f"{len(failed)} failed, first: {failed[0]}"
        )
    return written
