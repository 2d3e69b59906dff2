"""CamVid test images at 360x480: seglab's default ``predict`` path against plain PyTorch
eager fp32 on the same weights, in one run; optionally OpenVINO INT8 (NNCF) against the
fp32/bf16 export.

    .venv/bin/python benchmarks/predict_speed.py --run benchmarks/work/camvid-unet-run1 --int8
    .venv/bin/python benchmarks/predict_speed.py --run benchmarks/work/camvid-realtime \\
        --tag realtime

Every path is timed end to end per image: decode the PNG, preprocess (the run's input
scale, pad to the stride), infer, resize the logits to 360x480, argmax. The plain baseline
is written here with torch calls only (the model in fp32, no autocast, default memory
format). Each path predicts all 233 test images; the timed passes are repeated ``--repeats``
times, interleaved, and the medians of the per-image times are reported. mIoU is computed
from each path's own predictions over the 11 classes (void ignored).
Writes benchmarks/results/predict_speed[_TAG].json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _common import ROOT, SHARED, save

from seglab.config import DataConfig, load_config
from seglab.data.dataset import DatasetDefinition, SegDataset
from seglab.data.io import read_image
from seglab.evaluation.metrics import confusion_matrix, metrics_from_confusion
from seglab.export import export
from seglab.inference.predictor import Predictor, load_checkpoint, resolve_checkpoint


def plain_eager(run: Path, scale: float):
    """The baseline a PyTorch user writes: fp32 model, eager, same input policy."""
    model, _, _ = load_checkpoint(run)
    model = model.to(memory_format=torch.contiguous_format).float().eval()
    stride = model.stride

    @torch.inference_mode()
    def predict_file(path: Path) -> np.ndarray:
        img = read_image(path)
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
        h, w = x.shape[-2:]
        if scale != 1.0:
            x = F.interpolate(
                x, size=(round(h * scale), round(w * scale)), mode="bilinear", antialias=True
            )
        sh, sw = x.shape[-2:]
        x = F.pad(x, (0, (-sw) % stride, 0, (-sh) % stride), mode="reflect")
        out = model(x)[..., :sh, :sw]
        if (sh, sw) != (h, w):
            out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
        return out.argmax(1)[0].to(torch.uint8).numpy()

    return predict_file


def masks_of(predictor: Predictor):
    return lambda f: predictor.predict_file(f)[1]


def run_path(predict_file, files) -> tuple[list[float], list[np.ndarray]]:
    times, preds = [], []
    for f in files:
        t = time.perf_counter()
        preds.append(predict_file(f))
        times.append(time.perf_counter() - t)
    return times, preds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, default=ROOT / "benchmarks" / "work" / "camvid-unet-run1")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--int8", action="store_true", help="also measure an INT8 OpenVINO export")
    ap.add_argument("--calibration-size", type=int, default=100)
    ap.add_argument("--tag", default="")
    ap.add_argument(
        "--scale", type=float, help="network input scale for every path (default: the run's)"
    )
    ap.add_argument("--limit", type=int, default=0, help="first N test images only (smoke)")
    args = ap.parse_args()
    if not (SHARED / "camvid").is_dir():
        sys.exit(f"CamVid not found at {SHARED / 'camvid'}; see ../shared/datasets/README.md")
    ckpt = resolve_checkpoint(args.run)
    _, config, meta = load_checkpoint(ckpt)
    cfg = load_config(args.run / "config.yaml") if args.run.is_dir() else None
    data_cfg = cfg.data if cfg else DataConfig(**config["data"])
    data_cfg.ignore_index = meta["ignore_index"]  # what the model was trained with
    definition = DatasetDefinition.from_config(data_cfg)
    test = SegDataset(definition, "test")
    files = [item.image for item in test.pairs]
    masks = [test.load(i)[1] for i in range(len(test))]
    if args.limit:
        files, masks = files[: args.limit], masks[: args.limit]
    k, ignore = len(meta["classes"]), meta["ignore_index"]
    scale = args.scale or config["inference"]["scale"]

    paths = {
        "plain PyTorch eager fp32": plain_eager(ckpt, scale),
        "seglab predict (default)": masks_of(Predictor.open(ckpt, scale=scale)),
    }
    default_backend = Predictor.open(ckpt).backend.name
    tmp = Path(tempfile.mkdtemp(prefix="seglab-bench-"))
    if args.int8:
        export(ckpt, "openvino", tmp / "fp32")
        calib = Path(files[0]).parent.parent / "train"
        t0 = time.monotonic()
        export(
            ckpt,
            "openvino",
            tmp / "int8",
            int8=True,
            calibration=calib,
            calibration_size=args.calibration_size,
        )
        quant_s = time.monotonic() - t0
        paths["OpenVINO export, fp32 inference"] = masks_of(
            Predictor.open(tmp / "fp32", precision="fp32", scale=scale)
        )
        paths["OpenVINO export, bf16 inference"] = masks_of(
            Predictor.open(tmp / "fp32", scale=scale)
        )
        paths["OpenVINO INT8 (NNCF)"] = masks_of(Predictor.open(tmp / "int8", scale=scale))
    wrap = paths
    for fn in wrap.values():  # warm-up (OpenVINO compiles per new input shape)
        for f in files[:3]:
            fn(f)
    per_image: dict[str, list[float]] = {n: [] for n in wrap}
    preds: dict[str, list[np.ndarray]] = {}
    for r in range(args.repeats):
        for name, fn in wrap.items():
            times, p = run_path(fn, files)
            per_image[name] += times
            preds.setdefault(name, p)
            print(f"pass {r + 1}: {name}: {1000 * statistics.median(times):.1f} ms/image")

    rows = {}
    base = "plain PyTorch eager fp32"
    for name in wrap:
        cm = sum(confusion_matrix(m, p, k, ignore) for m, p in zip(masks, preds[name], strict=True))
        metrics = metrics_from_confusion(cm, meta["classes"])
        agree = float(
            np.mean([(a == b).mean() for a, b in zip(preds[name], preds[base], strict=True)])
        )
        ms = 1000 * statistics.median(per_image[name])
        rows[name] = {
            "ms_per_image_median": round(ms, 2),
            "images_per_s": round(1000 / ms, 2),
            "test_mIoU": metrics["mIoU"],
            "pixels_equal_to_plain": agree,
        }
    for row in rows.values():
        row["speedup_vs_plain"] = round(
            rows[base]["ms_per_image_median"] / row["ms_per_image_median"], 2
        )
    print(
        f"\nCamVid test, {len(files)} images at 360x480, end to end per image "
        f"(run {args.run.name}, input scale {scale}):"
    )
    for name, row in rows.items():
        print(
            f"  {name:34s} {row['ms_per_image_median']:8.1f} ms  {row['images_per_s']:7.1f} img/s"
            f"  x{row['speedup_vs_plain']:<6}  mIoU {100 * row['test_mIoU']:.2f}%"
            f"  pixels equal to plain {100 * row['pixels_equal_to_plain']:.2f}%"
        )
    result = {
        "run": str(args.run),
        "images": len(files),
        "repeats": args.repeats,
        "input_scale": scale,
        "default_backend": default_backend,
        "threads": torch.get_num_threads(),
        "paths": rows,
        "speed_ratio_default_vs_plain": rows["seglab predict (default)"]["speedup_vs_plain"],
        "mIoU_difference_points": round(
            100 * (rows["seglab predict (default)"]["test_mIoU"] - rows[base]["test_mIoU"]), 3
        ),
    }
    if args.int8:
        q, b16 = rows["OpenVINO INT8 (NNCF)"], rows["OpenVINO export, bf16 inference"]
        f32 = rows["OpenVINO export, fp32 inference"]
        result["int8"] = {
            "calibration_images": args.calibration_size,
            "quantization_seconds": round(quant_s, 1),
            "speedup_vs_openvino_fp32": round(
                f32["ms_per_image_median"] / q["ms_per_image_median"], 2
            ),
            "speedup_vs_openvino_bf16": round(
                b16["ms_per_image_median"] / q["ms_per_image_median"], 2
            ),
            "mIoU_drop_points_vs_fp32": round(100 * (f32["test_mIoU"] - q["test_mIoU"]), 3),
        }
        print(f"INT8: {result['int8']}")
    save("predict_speed" + (f"_{args.tag}" if args.tag else ""), result)


if __name__ == "__main__":
    main()
