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
from rich.markup import escape
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


def _setup_logging() -> None:
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

    t = Table(title=escape(title))
    for col in ("class", "IoU %", "Dice %", "precision %", "recall %", "pixels"):
        t.add_column(col, justify="left" if col == "class" else "right")
    for name, m in metrics["per_class"].items():
        t.add_row(
            escape(name),
            f(m["iou"]),
            f(m["dice"]),
            f(m["precision"]),
            f(m["recall"]),
            str(m["pixels"]),
        )
    out_console.print(t)
    out_console.print(
        f"mIoU {f(metrics['mIoU'])}  mDice {f(metrics['mDice'])}  "
        f"pixel accuracy {f(metrics['pixel_accuracy'])}  "
        f"mean class accuracy {f(metrics['mean_class_accuracy'])}  fwIoU {f(metrics['fw_iou'])}"
    )


def print_instance_metrics(metrics: dict, title: str) -> None:
    """COCO AP, DSB2018 score and counts of an instance evaluation."""

    def f(v):
        return "n/a" if v is None else f"{100 * v:.2f}"

    t = Table(title=escape(title))
    t.add_column("metric")
    t.add_column("value", justify="right")
    keys = ["mask_AP", "mask_AP50", "mask_AP75"]
    keys += [k for k in ("box_AP", "box_AP50", "box_AP75") if k in metrics]
    for k in keys:
        t.add_row(k, f(metrics[k]))
    t.add_row("DSB2018 score", f"{metrics['dsb_score']:.4f}")
    t.add_row("mean |count error|", f"{metrics['mean_abs_count_error']:.2f}")
    t.add_row("objects / image", f"{metrics['mean_objects']:.1f}")
    out_console.print(t)
    bad = {k: v for k, v in metrics.get("annotation_problems", {}).items() if v}
    if bad:
        out_console.print(f"bad annotations handled: {bad}")


def _must_exist(path: Path, what: str) -> None:
    """Answer a mistyped path at once, before torch and the models load."""
    if not path.exists():
        raise SeglabError(f"{path} does not exist; give {what}")


def _hw(size: str) -> tuple[int, int]:
    """``--size HxW`` as (height, width)."""
    try:
        h, w = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise SeglabError(f"--size {size!r}: give height x width, e.g. 360x480") from None
    return h, w


def _given(**options) -> str:
    """The options that were given (not None), as ``--name`` flags joined by commas."""
    return ", ".join(f"--{k.replace('_', '-')}" for k, v in options.items() if v is not None)


@app.command()
def train(
    config: Annotated[Path | None, typer.Argument(help="YAML config (see configs/)")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="override a config key, e.g. --set train.epochs=5 (repeatable)"),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="continue this run directory from its last checkpoint, with its config "
            "(--set may change train.* only)"
        ),
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
    from seglab.config import load_config

    if (config is None) == (resume is None):
        raise SeglabError("give either CONFIG or --resume RUN (a resumed run uses its config)")
    if resume is not None and not resume.is_dir():
        raise SeglabError(f"--resume {resume}: not a run directory")
    overrides = list(set_ or [])
    if resume is not None:
        config = resume / "config.yaml"
        if seed is not None:
            raise SeglabError("--seed cannot change a resumed run; only train.* can")
        for item in overrides:
            key = item.split("=", 1)[0].strip()
            if not key.startswith("train."):
                raise SeglabError(
                    f"--set {key}: a resumed run keeps its config; only train.* keys may change"
                )
    for key, value in (("seed", seed), ("train.devices", devices), ("train.num_nodes", num_nodes)):
        if value is not None:
            overrides.append(f"{key}={value}")
    cfg = load_config(config, overrides)  # a typo is reported before torch and Lightning load

    from seglab.training.train import train as train_run

    run_dir = train_run(cfg, runs_dir, resume)
    if (run_dir / "summary.json").is_file():
        console.print(f"[green]done[/green]: run directory {escape(str(run_dir))}")


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="run directory or .ckpt file")],
    split: Annotated[str, typer.Option(help="split to evaluate (train, val, test, ...)")] = "test",
    devices: Annotated[
        int | None,
        typer.Option(help="processes (Lightning DDP, default 1); results are identical to one"),
    ] = None,
    data_root: Annotated[
        Path | None, typer.Option(help="read the data set from here instead")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="output folder (default RUN/eval/<split>)")
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(help="torch (reference, as in validation, the default), openvino or auto"),
    ] = None,
    tta: Annotated[
        str | None,
        typer.Option(help="test-time augmentation: hflip, vflip, d4, scales; e.g. hflip,0.75,1.25"),
    ] = None,
    predictions: Annotated[
        Path | None,
        typer.Option(help="score <stem>_mask.png files in this folder; RUN is then the data set"),
    ] = None,
    format: Annotated[
        str | None, typer.Option(help="with --predictions and a data folder: its layout")
    ] = None,
    proposals: Annotated[
        int | None,
        typer.Option(min=1, help="Mask R-CNN: RPN proposals per image instead of the run's"),
    ] = None,
) -> None:
    """Evaluate a trained model: per-class IoU, Dice, precision, recall and the means.

    Writes metrics.json (with the confusion matrix) and per_class.csv. With --predictions,
    scores mask files (from predict or classic) against the data set given as RUN.
    Instance models: COCO mask AP (+ box AP), DSB2018 score and count error; metrics.json,
    per_image.csv and results.json (COCO results).

    Example: seglab evaluate runs/camvid-unet --split test --tta hflip
    Example: seglab evaluate configs/isbi2012.yaml --predictions preds/otsu --split val
    Example: seglab evaluate runs/dsb2018-maskrcnn --split val --proposals 300
    """
    _must_exist(run, "a run directory, a .ckpt file or, with --predictions, a data set")
    if predictions is not None:
        given = _given(
            data_root=data_root, backend=backend, tta=tta, devices=devices, proposals=proposals
        )
        if given:
            raise SeglabError(f"--predictions scores existing masks, without a model: drop {given}")
        from seglab.data.dataset import load_definition
        from seglab.evaluation.evaluate import evaluate_predictions

        definition = load_definition(run, format)
        metrics, out_dir = evaluate_predictions(definition, split, predictions, out)
        print_metrics(metrics, f"{split}: {metrics['images']} images, {predictions}")
        console.print(
            f"metrics and report written to {out_dir} (open {out_dir}/report.html)", markup=False
        )
        return
    if format is not None:
        raise SeglabError("--format applies with --predictions only; a run knows its data set")
    from seglab.evaluation.evaluate import evaluate as run_eval

    metrics, out_dir = run_eval(
        run,
        split,
        1 if devices is None else devices,
        data_root,
        out,
        backend or "torch",
        tta,
        proposals=proposals,
    )
    if "dsb_score" in metrics:  # task: instance
        print_instance_metrics(metrics, f"{split}: {metrics['images']} images")
        console.print(f"metrics, per_image.csv and results.json written to {out_dir}", markup=False)
        return
    if out_dir is not None:
        print_metrics(metrics, f"{split}: {metrics['images']} images")
        console.print(
            f"metrics and report written to {out_dir} (open {out_dir}/report.html)", markup=False
        )


@app.command()
def predict(
    run: Annotated[Path, typer.Argument(help="run directory, .ckpt file or exported folder")],
    inputs: Annotated[list[Path], typer.Argument(help="image files or folders")],
    out: Annotated[Path, typer.Option(help="output folder")] = Path("predictions"),
    alpha: Annotated[float, typer.Option(help="overlay opacity 0..1")] = 0.5,
    backend: Annotated[
        str | None,
        typer.Option(help="auto (OpenVINO when installed), torch, openvino, onnxruntime"),
    ] = None,
    tta: Annotated[
        str | None,
        typer.Option(help="test-time augmentation: hflip, vflip, d4, scales; e.g. hflip,0.75,1.25"),
    ] = None,
    tile: Annotated[int | None, typer.Option(help="tile side for large images")] = None,
    max_pixels: Annotated[
        int | None, typer.Option(help="images above this many pixels go in tiles")
    ] = None,
    proposals: Annotated[
        int | None,
        typer.Option(min=1, help="Mask R-CNN: RPN proposals per image instead of the run's"),
    ] = None,
) -> None:
    """Segment images of any size: <stem>_mask.png (class index per pixel, the input's size)
    and <stem>_overlay.png (colour overlay) per image. Large images are predicted in
    overlapping tiles with bounded memory. Instance models (task: instance) write
    <stem>_instances.png (16-bit ids), <stem>_overlay.png (a colour per object) and
    results.json (COCO results: RLE masks and scores).

    Example: seglab predict runs/camvid-unet photos/ street.png --out predictions/
    """
    _must_exist(run, "a run directory, a .ckpt file or an exported model folder")
    from rich.progress import track

    from seglab.inference.predict import predict as run_predict
    from seglab.inference.predictor import Predictor
    from seglab.instance.run import is_instance_checkpoint, no_rpn, predict_instance

    if is_instance_checkpoint(run):
        given = _given(backend=backend, tta=tta, tile=tile, max_pixels=max_pixels)
        if given:
            raise SeglabError(f"{run} is an instance run, which does not use {given}: drop it")
        written = predict_instance(
            run,
            inputs,
            out,
            alpha,
            progress=lambda xs: track(xs, description="predicting", console=console),
            proposals=proposals,
        )
        console.print(
            f"{len(written)} instance maps (16-bit PNG) and overlays, and results.json "
            f"(COCO results) written to {out}"
        )
        return

    if proposals is not None:
        raise no_rpn(run)
    kw = {k: v for k, v in (("tile", tile), ("max_pixels", max_pixels)) if v is not None}
    if tta is not None:
        kw["tta"] = tta
    predictor = Predictor.open(run, backend=backend, **kw)
    console.print(f"backend: {predictor.backend.name} ({predictor.backend.precision})")
    written = run_predict(
        predictor,
        inputs,
        out,
        alpha,
        progress=lambda xs: track(xs, description="predicting", console=console),
    )
    console.print(f"{len(written)} masks and overlays written to {escape(str(out))}")


@app.command()
def serve(
    models: Annotated[
        list[str],
        typer.Argument(
            metavar="RUN_OR_MODEL...",
            help="run directories, .ckpt files or exported folders; NAME=PATH names one "
            "(the first is the default)",
        ),
    ],
    host: Annotated[str, typer.Option(help="address to listen on (0.0.0.0: every one)")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    backend: Annotated[
        str | None,
        typer.Option(help="auto (OpenVINO when installed), torch, openvino, onnxruntime"),
    ] = None,
    max_queue: Annotated[
        int, typer.Option(help="images waiting for inference before 503 Retry-After")
    ] = 16,
    max_batch: Annotated[int, typer.Option(help="same-sized queued images per forward pass")] = 1,
    max_upload_mb: Annotated[float, typer.Option(help="largest accepted upload, MiB")] = 25.0,
    max_pixels: Annotated[
        int, typer.Option(help="largest accepted image, width x height pixels")
    ] = 25_000_000,
) -> None:
    """Serve models over HTTP: POST /v1/segment, GET /v1/models, /healthz, /metrics, the
    OpenAPI schema at /docs, and a web page at / to try them in a browser.

    Example: seglab serve runs/camvid-unet --port 8000   (then open http://127.0.0.1:8000/)
    """
    import uvicorn

    from seglab.serve import create_app, open_models

    if not 1 <= port <= 65535:
        raise SeglabError(f"--port {port} is not a TCP port; use 1..65535")
    if max_queue < 1 or max_batch < 1 or max_upload_mb <= 0 or max_pixels < 1:
        raise SeglabError("--max-queue, --max-batch, --max-upload-mb and --max-pixels must be > 0")
    predictors = open_models(models, backend)
    for name, p in predictors.items():
        console.print(f"model {name}: backend {p.backend.name} ({p.backend.precision})")
    app_ = create_app(
        predictors,
        max_queue=max_queue,
        max_batch=max_batch,
        max_upload_bytes=int(max_upload_mb * (1 << 20)),
        max_pixels=max_pixels,
    )
    console.print(f"serving on http://{host}:{port}/ (API docs at /docs); Ctrl+C stops")
    try:
        uvicorn.run(app_, host=host, port=port, log_level="warning")
    except SystemExit as err:  # uvicorn exits when it cannot bind
        raise SeglabError(f"cannot listen on {host}:{port}; is the port in use?") from err


DEMO_MARKER = ".seglab-demo"


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

    marker = workdir / DEMO_MARKER
    # a demo folder from before the marker existed: only the demo's folders and a demo run
    legacy = (
        workdir.is_dir()
        and {p.name for p in workdir.iterdir()} <= {"data", "runs", "predictions"}
        and any(p.name.startswith("demo") for p in (workdir / "runs").glob("*"))
    )
    if (
        workdir.exists()
        and not marker.is_file()
        and not legacy
        and (workdir.is_file() or any(workdir.iterdir()))
    ):
        raise SeglabError(
            f"--workdir {workdir} holds other files; give a new or empty folder "
            "(or an earlier demo's)"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    marker.write_text("written by seglab demo; the demo may replace this folder's contents\n")
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
    predictor = Predictor.open(run_dir)
    written = run_predict(predictor, [data / "images"], pred_dir)
    console.print(f"\n[bold]demo finished in {time.monotonic() - t0:.0f} s[/bold]")
    console.print(f"  run (config, metrics per epoch, checkpoints): {run_dir}")
    console.print(f"  test metrics: {eval_dir / 'metrics.json'}")
    console.print(f"  report (open in a browser): {eval_dir / 'report.html'}")
    console.print(
        f"  masks and overlays: {pred_dir} ({len(written)} images, "
        f"{predictor.backend.name} backend)"
    )


@app.command()
def classic(
    method: Annotated[
        str,
        typer.Argument(
            help="otsu, li, triangle, multiotsu, adaptive, edges, "
            "region_growing, watershed, watershed_distance, "
            "graphcut, superpixels, felzenszwalb"
        ),
    ],
    source: Annotated[Path, typer.Argument(help="config, dataset.yaml or data set folder")],
    out: Annotated[Path, typer.Option(help="folder for <stem>_mask.png")] = Path("classic"),
    split: Annotated[str, typer.Option(help="split to segment")] = "val",
    tune_split: Annotated[
        str, typer.Option(help="labelled split for the parameter search")
    ] = "train",
    tune_images: Annotated[int, typer.Option(help="images used for tuning")] = 12,
    format: Annotated[str | None, typer.Option(help="layout of a data set folder")] = None,
) -> None:
    """A classical baseline, tuned on labelled images, writing masks like predict does.

    The parameter grid is searched on --tune-split (half to fit the region-to-class mapping
    or the superpixel forest, half to score), then SPLIT is segmented.

    Example: seglab classic otsu configs/isbi2012.yaml --out preds/otsu && \
             seglab evaluate configs/isbi2012.yaml --predictions preds/otsu --split val
    """
    from rich.progress import track

    from seglab.classic import run_classic
    from seglab.data.dataset import load_definition
    from seglab.runs import write_json

    definition = load_definition(source, format)
    t0 = time.monotonic()
    written, search = run_classic(
        method,
        definition,
        split,
        out,
        tune_split,
        tune_images,
        progress=lambda xs: track(xs, description=method, console=console),
    )
    write_json(
        out / "classic.json", {**search, "split": split, "seconds": round(time.monotonic() - t0, 1)}
    )
    console.print(
        f"{method}: best {search['best']['params']} on {tune_split}; {len(written)} masks in {out} "
        f"({time.monotonic() - t0:.0f} s). Score: seglab evaluate {source} "
        f"--predictions {out} --split {split}"
    )


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="run directories")],
    out: Annotated[Path, typer.Option(help="folder for compare.md/.csv/.html/.json")] = Path(
        "compare"
    ),
    size: Annotated[str, typer.Option(help="latency input HxW; 'none' skips timing")] = "360x480",
    backend: Annotated[str, typer.Option(help="backend timed for latency")] = "auto",
) -> None:
    """Compare runs: architecture, encoder, parameters, training time, images/s, latency,
    mIoU (latest test evaluation, else the latest of another split, else best validation;
    the mIoU_source column says which) and per-class IoU.

    Example: seglab compare runs/camvid-unet runs/camvid-realtime --out compare/
    """
    from seglab.evaluation.compare import compare as run_compare

    hw = None if size.lower() == "none" else _hw(size)
    rows, out_dir = run_compare(runs, out, hw, backend)
    t = Table(title=f"{len(rows)} runs")
    cols = ["run", "architecture", "encoder", "params_m", "train_minutes", "latency_ms"]
    cols += ["mIoU", "mIoU_source"]
    for c in cols:
        t.add_column(c, justify="left" if c in ("run", "architecture", "encoder") else "right")
    for r in rows:
        t.add_row(
            *[
                "-" if r.get(c) is None else (f"{100 * r[c]:.2f}%" if c == "mIoU" else str(r[c]))
                for c in cols
            ]
        )
    out_console.print(t)
    console.print(f"compare.md, .csv, .html, .json and miou_vs_latency.png in {out_dir}")


@app.command("learning-curve")
def learning_curve(
    config: Annotated[Path, typer.Argument(help="YAML config")],
    fractions: Annotated[str, typer.Option(help="shares of the train split")] = "0.1,0.25,0.5,1.0",
    split: Annotated[str, typer.Option(help="split scored")] = "val",
    set_: Annotated[list[str] | None, typer.Option("--set", help="config override")] = None,
    runs_dir: Annotated[Path, typer.Option(help="where the runs go")] = Path("runs"),
    out: Annotated[Path, typer.Option(help="folder for the curve")] = Path("learning_curve"),
) -> None:
    """Train on nested random shares of the train split and plot mIoU against the number
    of labelled images: how much would more labelling help?

    Example: seglab learning-curve configs/camvid.yaml --fractions 0.1,0.25,0.5,1 \
             --set train.max_minutes=10
    """
    from seglab.config import load_config
    from seglab.evaluation.compare import learning_curve as run_curve

    try:
        shares = [float(f) for f in fractions.split(",")]
    except ValueError:
        raise SeglabError(f"--fractions {fractions!r}: use numbers like 0.1,0.25,0.5,1") from None
    cfg = load_config(config, list(set_ or []))
    rows = run_curve(cfg, shares, runs_dir, split, out)
    for r in rows:
        out_console.print(
            f"{r['train_images']:6d} images ({100 * r['fraction']:.0f}%): "
            f"{split} mIoU {100 * r['mIoU']:.2f}%"
        )
    console.print(f"learning_curve.json and learning_curve.png in {out}")


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="run directory or .ckpt file")],
    format: Annotated[str, typer.Option(help="onnx, openvino or torchscript")] = "openvino",
    out: Annotated[
        Path | None, typer.Option(help="output folder (default RUN/export-<format>)")
    ] = None,
    int8: Annotated[bool, typer.Option(help="INT8 post-training quantization (openvino)")] = False,
    calibration: Annotated[
        Path | None, typer.Option(help="folder of typical images for --int8 calibration")
    ] = None,
    calibration_size: Annotated[int, typer.Option(help="calibration images used")] = 100,
) -> None:
    """Export a model with its metadata; the folder alone is enough for seglab predict.

    Example: seglab export runs/camvid-unet --format openvino --int8 --calibration data/val
    """
    from seglab.export import export as run_export
    from seglab.inference.predictor import resolve_checkpoint

    if out is None:
        ckpt = resolve_checkpoint(run)
        base = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
        out = base / f"export-{format}{'-int8' if int8 else ''}"
    t0 = time.monotonic()
    path = run_export(run, format, out, int8, calibration, calibration_size)
    console.print(
        f"exported {path} in {time.monotonic() - t0:.1f} s; predict with: "
        f"seglab predict {out} IMAGES"
    )


@app.command()
def benchmark(
    source: Annotated[Path, typer.Argument(help="run directory, .ckpt or exported folder")],
    backends: Annotated[str, typer.Option(help="comma list")] = "torch,onnxruntime,openvino",
    precisions: Annotated[str, typer.Option(help="comma list of fp32, bf16")] = "fp32,bf16",
    batch_sizes: Annotated[str, typer.Option(help="comma list")] = "1,4",
    size: Annotated[str, typer.Option(help="HxW of the input")] = "360x480",
    warmup: Annotated[int, typer.Option(help="untimed calls first")] = 3,
    runs: Annotated[int, typer.Option(help="timed calls")] = 20,
    out: Annotated[Path | None, typer.Option(help="write the results as JSON here")] = None,
) -> None:
    """Latency p50/p90, images/s and peak memory per backend x precision x batch size.

    Example: seglab benchmark runs/camvid-unet --batch-sizes 1 --out bench.json
    """
    from seglab.benchmark import benchmark as run_bench
    from seglab.runs import write_json

    h, w = _hw(size)
    try:
        batches = [int(b) for b in batch_sizes.split(",")]
    except ValueError:
        raise SeglabError(f"--batch-sizes {batch_sizes!r}: give numbers like 1,4") from None
    result = run_bench(
        source, backends.split(","), precisions.split(","), batches, (h, w), warmup, runs
    )
    t = Table(
        title=f"{escape(str(source))} at {h}x{w}, {result['threads']} threads, "
        f"{runs} runs after {warmup} warm-up"
    )
    for col in ("backend", "precision", "batch", "p50 ms", "p90 ms", "images/s", "peak RSS MB"):
        t.add_column(col, justify="right")
    for r in result["rows"]:
        if "error" in r:
            t.add_row(
                r["backend"],
                r.get("precision", ""),
                str(r.get("batch", "")),
                "failed (below)",
                "",
                "",
                "",
            )
        else:
            t.add_row(
                r["backend"],
                r["precision"],
                str(r["batch"]),
                f"{r['latency_p50_ms']:.1f}",
                f"{r['latency_p90_ms']:.1f}",
                f"{r['images_per_s']:.1f}",
                str(r["peak_rss_mb"]),
            )
    out_console.print(t)
    failed = [r for r in result["rows"] if "error" in r]
    for r in failed:
        where = " ".join(str(r[k]) for k in ("backend", "precision", "batch") if k in r)
        console.print(f"{where}: {one_line(Exception(r['error']))}", markup=False, soft_wrap=True)
    if out is not None:
        write_json(out, result)
        console.print(f"results written to {out}", markup=False)
    if failed and len(failed) == len(result["rows"]):
        raise SeglabError(f"every measurement of {source} failed; the errors are listed above")


@app.command()
def models(
    encoders: Annotated[
        str | None,
        typer.Option(
            help="list encoders whose name matches this pattern (fnmatch, e.g. '*resnet*')"
        ),
    ] = None,
    profile: Annotated[
        bool, typer.Option(help="measure parameters, GFLOPs, CPU latency and peak memory at --size")
    ] = False,
    size: Annotated[str, typer.Option(help="HxW for --profile")] = "360x480",
) -> None:
    """List the architectures with their options, or encoders, or profile the architectures.

    Example: seglab models --encoders 'tu-convnext*'
    """
    import inspect

    from seglab.models.registry import MODELS, smp_options

    if encoders is not None:
        import fnmatch

        import segmentation_models_pytorch as smp
        import timm

        names = [n for n in smp.encoders.get_encoder_names() if fnmatch.fnmatch(n, encoders)]
        names += [f"tu-{n}" for n in timm.list_models(encoders.removeprefix("tu-"))]
        for n in names:
            print(n)
        console.print(
            f"{len(names)} encoders (SMP names, and tu-<name> for any timm model "
            "with a feature pyramid)"
        )
        return
    if profile:
        from seglab.models.profile import profile_all

        h, w = _hw(size)
        t = Table(title=f"architectures at {h}x{w}, one image, default encoder")
        for col in ("model", "params (M)", "GFLOPs", "latency (ms)", "peak RSS (MB)"):
            t.add_column(col, justify="left" if col == "model" else "right")
        for r in profile_all(size=(h, w)):
            if "error" in r:
                t.add_row(r["model"], "error", str(r["error"]), "", "")
            else:
                t.add_row(
                    r["model"],
                    str(r["params_m"]),
                    str(r["gflops"]),
                    f"{r['latency_ms']} ({r['precision']})",
                    str(r["peak_rss_mb"]),
                )
        out_console.print(t)
        return
    t = Table(title="architectures (model.name)")
    t.add_column("name")
    t.add_column("what")
    t.add_column("options (model.encoder / model.options)")
    for name, spec in sorted(MODELS.items()):
        sig = inspect.signature(spec.builder)
        opts = [
            f"{p.name}={p.default!r}"
            for p in list(sig.parameters.values())[2:]
            if p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "encoder_weights"
        ]
        if spec.smp_class:
            opts += smp_options(spec.smp_class)
        t.add_row(name, spec.summary, ", ".join(opts))
    out_console.print(t)


data_app = typer.Typer(
    no_args_is_help=True, help="Check, describe, split, convert and fetch data sets."
)
app.add_typer(data_app, name="data")

SourceArg = Annotated[
    Path,
    typer.Argument(
        help="a config or dataset.yaml (its data: section), or a data set folder with --format"
    ),
]
FormatOpt = Annotated[
    str | None,
    typer.Option(
        "--format",
        help="layout of a data set folder: folder, camvid, isbi2012, voc, cityscapes, "
        "ade20k, coco, dsb2018",
    ),
]
SplitOpt = Annotated[
    list[str] | None,
    typer.Option("--split", help="split to use (repeatable; default: every split that exists)"),
]


class _StageProgress:
    """A rich progress bar driven by ``(stage, done, total)`` callbacks."""

    def __init__(self) -> None:
        from rich.progress import Progress

        self.progress = Progress(console=console, transient=True)
        self.tasks: dict[str, int] = {}

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total)
        self.progress.update(self.tasks[stage], completed=done, total=total)


@data_app.command("check")
def data_check(source: SourceArg, format: FormatOpt = None, split: SplitOpt = None) -> None:
    """Read every image and mask once and list each problem with its file; exit 1 if any.

    Finds unreadable images and masks, image/mask size mismatches, mask values or colours
    that are not declared classes, images without masks and masks without images, duplicate
    stems, empty or missing splits, and images of very different sizes.

    Example: seglab data check configs/camvid.yaml
    """
    from rich.progress import track

    from seglab.data.checks import check_dataset, summarize
    from seglab.data.dataset import load_definition

    definition = load_definition(source, format)
    t0 = time.monotonic()
    problems = check_dataset(
        definition,
        split,
        progress=lambda xs: track(xs, "checking", console=console, transient=True),
    )
    took = time.monotonic() - t0
    if not problems:
        console.print(
            f"[green]no problems[/green] in {escape(str(definition.root))} ({took:.1f} s)"
        )
        return
    for pr in problems:  # one greppable line per problem: FILE: KIND: MESSAGE
        print(f"{pr.file}: {pr.kind}: {pr.message}")
    console.print(f"{summarize(problems)}\n({took:.1f} s)", highlight=False)
    raise typer.Exit(1)


@data_app.command("stats")
def data_stats(
    source: SourceArg,
    format: FormatOpt = None,
    split: SplitOpt = None,
    out: Annotated[Path, typer.Option(help="folder for stats.json and the chart")] = Path(
        "data_stats"
    ),
) -> None:
    """Pixel frequency per class and split, image sizes, channel mean/std and suggested class
    weights (median frequency, inverse log); writes stats.json and class_frequency.png.

    Example: seglab data stats configs/isbi2012.yaml --out isbi_stats
    """
    from seglab.data.dataset import load_definition
    from seglab.data.stats import dataset_stats, write_stats

    definition = load_definition(source, format)
    with _StageProgress() as progress:
        stats = dataset_stats(definition, split, progress=progress)
    t = Table(title=f"classes of {escape(str(definition.root))}")
    t.add_column("class")
    splits = list(stats["splits"])
    for sp in splits:
        t.add_column(f"{sp} %", justify="right")
    t.add_column("median freq. w", justify="right")
    t.add_column("inverse log w", justify="right")
    weights = stats.get("class_weights")  # none when no split has masks
    for i, name in enumerate(definition.classes):
        row = [escape(name)]
        for sp in splits:
            st = stats["splits"][sp]
            row.append(f"{100 * st['class_frequency'][i]:.2f}" if st["labelled"] else "no masks")
        for kind in ("median_frequency", "inverse_log"):
            row.append(f"{weights[kind][i]:.3f}" if weights else "n/a")
        t.add_row(*row)
    out_console.print(t)
    out_console.print(f"mean {stats['mean']}  std {stats['std']} (0-255 scale)")
    for path in write_stats(stats, out):
        console.print(f"written {path}")


@data_app.command("split")
def data_split(
    source: SourceArg,
    format: FormatOpt = None,
    fractions: Annotated[str, typer.Option(help="train,val,test fractions")] = "0.7,0.15,0.15",
    seed: Annotated[int, typer.Option(help="random seed (same seed, same lists)")] = 0,
    out: Annotated[
        Path | None, typer.Option(help="folder for <split>.txt (default: the data set root)")
    ] = None,
    force: Annotated[bool, typer.Option(help="replace existing split lists")] = False,
) -> None:
    """Reproducible train/val/test lists, stratified so rare classes appear in every split.

    Example: seglab data split my_data/ --format folder --fractions 0.8,0.1,0.1 --seed 1
    """
    from seglab.data.dataset import load_definition
    from seglab.data.split import make_splits, write_splits

    definition = load_definition(source, format)
    try:
        fr = tuple(float(x) for x in fractions.split(","))
    except ValueError:
        raise SeglabError(f"--fractions {fractions!r}: give numbers like 0.7,0.15,0.15") from None
    with _StageProgress() as progress:
        splits = make_splits(definition, fr, seed, progress=progress)
    for path in write_splits(splits, out or definition.root, overwrite=force):
        console.print(f"written {path}")
    console.print(", ".join(f"{k}: {len(v)} images" for k, v in splits.items()))


@data_app.command("convert")
def data_convert(
    source: SourceArg,
    out: Annotated[Path, typer.Option(help="new, empty folder for the folder layout")],
    format: FormatOpt = None,
    split: SplitOpt = None,
    limit: Annotated[int | None, typer.Option(help="first N items per split only")] = None,
) -> None:
    """Convert any supported layout to the generic folder layout (index PNG masks, split
    lists and a dataset.yaml to train from).

    Example: seglab data convert configs/camvid.yaml --out camvid_folder
    """
    from seglab.data.convert import convert_dataset
    from seglab.data.dataset import load_definition

    definition = load_definition(source, format)
    with _StageProgress() as progress:
        yaml_path = convert_dataset(definition, out, split, progress=progress, limit=limit)
    console.print(f"converted into {out}; dataset definition {yaml_path}")


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="camvid, voc2012, isbi2012, dsb2018 or ade20k")],
    to: Annotated[Path, typer.Option(help="folder to download and extract into")] = Path("data"),
    url_base: Annotated[str | None, typer.Option(help="mirror to download from instead")] = None,
) -> None:
    """Download a public data set from its official location, verify, extract, and write its
    dataset.yaml. Resumes partial downloads.

    Example: seglab data fetch camvid --to data/
    """
    from seglab.data.fetch import fetch

    with _StageProgress() as progress:
        yaml_path = fetch(name, to, url_base, progress=progress)
    console.print(f"{name} ready; dataset definition {yaml_path}")


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
        console.print(f"[red]error[/red]: {escape(one_line(err))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as err:  # noqa: BLE001 - no traceback without --debug
        if debug:
            raise
        console.print(
            f"[red]error[/red]: {type(err).__name__}: {escape(one_line(err))} "
            "(rerun with --debug for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)
