"""The ``seglab`` command line: a thin layer that parses, validates and calls library functions.

Errors caused by input (data, config, checkpoints) print one line and exit 1; add
``--debug`` anywhere on the command line for the traceback.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from seglab.errors import SeglabError, one_line

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="seglab: train, evaluate and apply image segmentation models.",
)
console = Console(stderr=True)
out_console = Console()
log = logging.getLogger("seglab")


class _QuietLightning(logging.Filter):
    """Drop Lightning's advertisements and GPU/TPU notices on a CPU machine."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        return not (msg.startswith("💡") or "available: False" in msg)


def _setup_logging() -> None:
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_QuietLightning())
    if not log.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("seglab: %(message)s"))
        log.addHandler(h)
    log.setLevel(logging.INFO)
    log.propagate = False


def print_metrics(metrics: dict, title: str) -> None:
    """Per-class table and means; n/a for classes absent from ground truth and prediction."""

    def f(v):
        return "n/a" if v is None else f"{100 * v:.2f}"

    t = Table(title=title)
    for col in ("class", "IoU %", "Dice %", "precision %", "recall %", "pixels"):
        t.add_column(col, justify="left" if col == "class" else "right")
    for name, m in metrics["per_class"].items():
        t.add_row(
            name, f(m["iou"]), f(m["dice"]), f(m["precision"]), f(m["recall"]), str(m["pixels"])
        )
    out_console.print(t)
    out_console.print(
        f"mIoU {f(metrics['mIoU'])}  mDice {f(metrics['mDice'])}  "
        f"pixel accuracy {f(metrics['pixel_accuracy'])}  "
        f"mean class accuracy {f(metrics['mean_class_accuracy'])}  fwIoU {f(metrics['fw_iou'])}"
    )


@app.command()
def train(
    config: Annotated[Path | None, typer.Argument(help="YAML config (see configs/)")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="override a config key, e.g. --set train.epochs=5 (repeatable)"),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(help="continue the run in this run directory from its last checkpoint"),
    ] = None,
    runs_dir: Annotated[Path, typer.Option(help="where run directories are created")] = Path(
        "runs"
    ),
    seed: Annotated[int | None, typer.Option(help="random seed (repeatable runs)")] = None,
    devices: Annotated[int | None, typer.Option(help="processes per node (Lightning DDP)")] = None,
    num_nodes: Annotated[int | None, typer.Option(help="number of nodes (Lightning DDP)")] = None,
) -> None:
    """Train a model and write a run directory runs/<name>/.

    The run directory holds config.yaml (resolved), metrics.json and metrics.csv (per
    epoch), checkpoints/best.ckpt (best validation mIoU) and last.ckpt, and train.log.
    A new run never overwrites an earlier one (runs/<name>-2, -3, ...).

    Example: seglab train configs/camvid.yaml --set train.epochs=20 --seed 1
    """
    from seglab.training.train import train_from_file

    if config is None and resume is None:
        raise SeglabError("give a CONFIG.yaml to train, or --resume RUN_DIR")
    if config is None:
        config = resume / "config.yaml"
    overrides = list(set_ or [])
    for key, value in (("seed", seed), ("train.devices", devices), ("train.num_nodes", num_nodes)):
        if value is not None:
            overrides.append(f"{key}={value}")
    run_dir = train_from_file(config, overrides, runs_dir, resume)
    if (run_dir / "summary.json").is_file():
        console.print(f"[green]done[/green]: run directory {run_dir}")


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="run directory or .ckpt file")],
    split: Annotated[str, typer.Option(help="split to evaluate (train, val, test, ...)")] = "test",
    devices: Annotated[
        int, typer.Option(help="processes (Lightning DDP); results are identical to one process")
    ] = 1,
    data_root: Annotated[
        Path | None, typer.Option(help="read the data set from here instead")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="output folder (default RUN/eval/<split>)")
    ] = None,
) -> None:
    """Evaluate a trained model: per-class IoU, Dice, precision, recall and the means.

    Writes metrics.json (with the confusion matrix) and per_class.csv.

    Example: seglab evaluate runs/camvid-unet --split test
    """
    from seglab.evaluation.evaluate import evaluate as run_eval

    metrics, out_dir = run_eval(run, split, devices, data_root, out)
    if out_dir is not None:
        print_metrics(metrics, f"{split}: {metrics['images']} images")
        console.print(f"metrics written to {out_dir}")


@app.command()
def predict(
    run: Annotated[Path, typer.Argument(help="run directory or .ckpt file")],
    inputs: Annotated[list[Path], typer.Argument(help="image files or folders")],
    out: Annotated[Path, typer.Option(help="output folder")] = Path("predictions"),
    alpha: Annotated[float, typer.Option(help="overlay opacity 0..1")] = 0.5,
) -> None:
    """Segment images of any size: <stem>_mask.png (class index per pixel, the input's size)
    and <stem>_overlay.png (colour overlay) per image.

    Example: seglab predict runs/camvid-unet photos/ street.png --out predictions/
    """
    from rich.progress import track

    from seglab.inference.predict import predict as run_predict
    from seglab.inference.predictor import Predictor

    predictor = Predictor.from_checkpoint(run)
    written = run_predict(
        predictor,
        inputs,
        out,
        alpha,
        progress=lambda xs: track(xs, description="predicting", console=console),
    )
    console.print(f"{len(written)} masks and overlays written to {out}")


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="folder for the data, run and predictions")] = Path(
        "demo_runs"
    ),
    epochs: Annotated[int, typer.Option(help="training epochs")] = 12,
) -> None:
    """Offline end-to-end demo: synthetic data -> train (about a minute) -> evaluate -> predict.

    Example: seglab demo --workdir /tmp/seglab-demo
    """
    from seglab.config import config_from_dict
    from seglab.data.synthetic import CLASSES, COLORS, make_dataset
    from seglab.evaluation.evaluate import evaluate as run_eval
    from seglab.inference.predict import predict as run_predict
    from seglab.inference.predictor import Predictor
    from seglab.training.train import train as run_train

    t0 = time.monotonic()
    data = workdir / "data"
    if not (data / "test.txt").is_file():
        make_dataset(data)
    console.print(f"synthetic data set: {data} (64 train / 16 val / 16 test, 128x128, 4 classes)")
    cfg = config_from_dict(
        {
            "name": "demo",
            "seed": 0,
            "data": {
                "format": "folder",
                "root": str(data.resolve()),
                "classes": CLASSES,
                "colors": [list(c) for c in COLORS],
            },
            "model": {"name": "unet", "encoder": "resnet18"},
            "loss": {"name": "ce+dice"},
            "augment": {"hflip": 0.5, "vflip": 0.5, "rotate": 10, "scale": [0.8, 1.2]},
            "train": {"epochs": epochs, "batch_size": 8, "lr": 3e-3, "scheduler": "cosine"},
        },
        source="demo",
    )
    run_dir = run_train(cfg, workdir / "runs")
    metrics, eval_dir = run_eval(run_dir, "test")
    print_metrics(metrics, "demo: test split")
    pred_dir = workdir / "predictions"
    written = run_predict(Predictor.from_checkpoint(run_dir), [data / "images"], pred_dir)
    console.print(f"\n[bold]demo finished in {time.monotonic() - t0:.0f} s[/bold]")
    console.print(f"  run (config, metrics per epoch, checkpoints): {run_dir}")
    console.print(f"  test metrics: {eval_dir / 'metrics.json'}")
    console.print(f"  masks and overlays: {pred_dir} ({len(written)} images)")


def main(argv: list[str] | None = None) -> None:
    """Entry point: one-line errors, tracebacks only with --debug."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    _setup_logging()
    try:
        app(args, prog_name="seglab")
    except SeglabError as err:
        if debug:
            raise
        console.print(f"[red]error[/red]: {one_line(err)}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as err:  # noqa: BLE001 - no traceback without --debug
        if debug:
            raise
        console.print(
            f"[red]error[/red]: {type(err).__name__}: {one_line(err)} "
            "(rerun with --debug for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)
