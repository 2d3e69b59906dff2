"""``evaluate()``: metrics of a checkpoint on a split, through the training code's own path."""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path

import lightning as L

from seglab.config import Config
from seglab.data.dataset import DatasetDefinition
from seglab.data.module import SegDataModule
from seglab.errors import SeglabError
from seglab.evaluation.report import write_report
from seglab.inference.predictor import (
    Predictor,
    read_checkpoint,
    resolve_checkpoint,
    resolve_precision,
)
from seglab.runs import new_run_dir, write_atomic, write_json
from seglab.training.task import SegmentationTask

log = logging.getLogger("seglab")


def load_task(ckpt_path: Path) -> SegmentationTask:
    """A SegmentationTask with the checkpoint's weights (read with ``weights_only``)."""
    ckpt = read_checkpoint(ckpt_path)
    hp = ckpt["hyper_parameters"]
    task = SegmentationTask(hp["config"], hp["meta"], hp.get("class_weights"), False, teacher=False)
    try:
        task.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        raise SeglabError(
            f"checkpoint {ckpt_path} does not match its model config "
            f"({(lines[1] if len(lines) > 1 else lines[0])[:160]})"
        ) from None
    return task


def per_class_csv(metrics: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["class", "iou", "dice", "precision", "recall", "pixels"])
    for name, m in metrics["per_class"].items():
        w.writerow([name, m["iou"], m["dice"], m["precision"], m["recall"], m["pixels"]])
    return buf.getvalue()


def evaluate(
    run_or_ckpt: str | Path,
    split: str = "test",
    devices: int = 1,
    data_root: Path | None = None,
    out: Path | None = None,
    backend: str = "torch",
    tta: str | None = None,
    report: bool = True,
    proposals: int | None = None,
) -> tuple[dict, Path | None]:
    """Evaluate on ``split``; returns (metrics, output folder; None on non-zero ranks).

    ``backend`` torch is the reference (the path validation took during training); other
    backends and ``tta`` swap the task's Predictor, so the data path stays the same.
    ``proposals``: Mask R-CNN runs only, the RPN's proposals per image instead of the run's."""
    ckpt_path = resolve_checkpoint(run_or_ckpt)
    from seglab.instance.run import evaluate_instance, is_instance_checkpoint, no_rpn

    if is_instance_checkpoint(ckpt_path):
        if backend != "torch" or tta or devices != 1:
            raise SeglabError(
                "instance models are evaluated with the torch backend in one process, "
                "without TTA; drop --backend, --tta and --devices"
            )
        return evaluate_instance(ckpt_path, split, data_root, out, proposals=proposals)
    if proposals is not None:
        raise no_rpn(ckpt_path)
    task = load_task(ckpt_path)
    if backend != "torch" or tta:
        task.predictor = Predictor.open(ckpt_path, backend=backend, tta=tta)
    cfg: Config = task.cfg.model_copy(deep=True)
    if data_root is not None:
        cfg.data.root = data_root
    cfg.data.ignore_index = task.hparams.meta["ignore_index"]  # what the model was trained with
    definition = DatasetDefinition.from_config(cfg.data)
    if definition.classes != task.hparams.meta["classes"]:
        raise SeglabError(
            f"the data set's classes {definition.classes} differ from the "
            f"checkpoint's {task.hparams.meta['classes']}; evaluate on matching data"
        )
    dm = SegDataModule(cfg, definition, train_split=None, eval_split=split)
    precision = resolve_precision(cfg.train.precision)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        precision="bf16-mixed" if precision == "bf16" else "32-true",
        logger=False,
        use_distributed_sampler=False,
        enable_model_summary=False,
        enable_progress_bar=True,
    )
    task.per_image = {} if report else None
    trainer.test(task, datamodule=dm, verbose=False)
    metrics = dict(task.last_test)
    metrics.update(
        {
            "split": split,
            "images": len(dm.eval_set),
            "checkpoint": str(ckpt_path),
            "precision": precision,
            "devices": devices,
            "backend": getattr(task.predictor.backend, "name", backend),
            "tta": tta or "",
        }
    )
    if trainer.global_rank != 0:
        return metrics, None
    if out is None:
        run_dir = (
            ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent
        )
        out = new_run_dir(run_dir / "eval", split)
    else:
        out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", metrics)
    write_atomic(out / "per_class.csv", per_class_csv(metrics))
    if report:
        meta = task.hparams.meta

        def predict(i: int) -> tuple:
            image, target = dm.eval_set.load(i)
            return image, target, task.predictor.predict(image)

        run_dir = ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else None
        epochs_file = run_dir / "metrics.json" if run_dir else None
        write_report(
            out,
            metrics,
            meta["classes"],
            meta["colors"],
            meta["ignore_index"],
            gallery_rows(task.per_image, predict, dm.eval_set),
            json.loads(epochs_file.read_text()) if epochs_file and epochs_file.is_file() else None,
            title=f"{run_dir.name if run_dir else ckpt_path.name}: {split}",
        )
    return metrics, out


def gallery_rows(per_image: dict, predict, dataset, n: int = 3) -> list[dict]:
    """The ``n`` best and ``n`` worst images by mIoU, with their predictions."""
    scored = sorted((v, i) for i, v in per_image.items() if v is not None)
    worst = scored[:n]
    best = [s for s in scored[::-1][:n] if s not in worst]
    rows = []
    for group, chosen in (("best", best), ("worst", worst)):
        for miou, i in chosen:
            image, target, pred = predict(i)
            name = Path(dataset.pairs[i].image).name
            rows.append(
                {
                    "image": image,
                    "target": target,
                    "pred": pred,
                    "miou": miou,
                    "name": name,
                    "group": group,
                }
            )
    return rows


def evaluate_predictions(
    definition: DatasetDefinition,
    split: str,
    predictions: Path,
    out: Path | None = None,
    report: bool = True,
) -> tuple[dict, Path]:
    """Score mask files ``predictions/<stem>_mask.png`` (from ``seglab predict`` or
    ``seglab classic``) against ``split`` with the same confusion-matrix metrics."""
    import numpy as np

    from seglab.data.dataset import SegDataset
    from seglab.data.io import read_mask
    from seglab.evaluation.metrics import confusion_matrix, image_miou, metrics_from_confusion

    ds = SegDataset(definition, split, cache=False)
    k, ignore = definition.num_classes, definition.ignore_index
    cm = np.zeros((k, k), np.int64)
    per_image = {}
    for i, item in enumerate(ds.pairs):
        path = Path(predictions) / f"{Path(item.image).stem}_mask.png"
        if not path.is_file():
            raise SeglabError(
                f"no prediction {path} for {item.image}; predict the whole {split} split "
                "into that folder"
            )
        target = ds.load(i)[1]
        pred = read_mask(path)
        if pred.shape != target.shape:
            raise SeglabError(
                f"prediction {path} is {pred.shape[1]}x{pred.shape[0]} but its mask is "
                f"{target.shape[1]}x{target.shape[0]}; predictions must have the image's size"
            )
        if pred.max() >= k:
            raise SeglabError(
                f"prediction {path} has value {int(pred.max())}, not a class (0..{k - 1})"
            )
        cm += confusion_matrix(target, pred, k, ignore)
        per_image[i] = image_miou(target, pred, k, ignore)
    metrics = metrics_from_confusion(cm, definition.classes)
    metrics["confusion_matrix"] = cm.tolist()
    metrics.update({"split": split, "images": len(ds), "predictions": str(predictions)})
    out = out or new_run_dir(Path(predictions) / "eval", split)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", metrics)
    write_atomic(out / "per_class.csv", per_class_csv(metrics))
    if report:

        def predict(i: int) -> tuple:
            image, target = ds.load(i)
            stem = Path(ds.pairs[i].image).stem
            return image, target, read_mask(Path(predictions) / f"{stem}_mask.png")

        rows = gallery_rows(per_image, predict, ds)
        title = f"{Path(predictions).name}: {split}"
        write_report(out, metrics, definition.classes, definition.colors, ignore, rows, None, title)
    return metrics, out
