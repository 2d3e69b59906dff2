"""Training throughput: seglab vs a plain fp32 PyTorch loop, same SMP U-Net-ResNet18, one run.

    .venv/bin/python benchmarks/train_speed.py [--steps 16] [--breakdown] [--tag CPU]

Both train U-Net-ResNet18 (segmentation-models-pytorch, random init) at 256x256, batch 8,
AdamW, cross-entropy, on CamVid train crops (synthetic images when CamVid is absent).

* plain: the model in fp32, default memory format, a hand-written loop over batches that
  are already in memory (no loading cost at all: this favours the baseline);
* seglab: ``seglab.training.train`` end to end (Lightning, bf16 autocast + channels_last,
  data augmentation in a loader process); the time between consecutive batch ends,
  which includes any wait for data.

Prints images/s of each (median over steps after warm-up) and the ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from _common import SHARED, save
from lightning.pytorch.callbacks import Callback

from seglab.config import config_from_dict
from seglab.data.synthetic import CLASSES, make_dataset
from seglab.inference.backends import cpu_has_bf16
from seglab.training.task import ChannelsLastUpsampleGrads
from seglab.training.train import train

BATCH, SIZE, WARMUP = 8, 256, 3


def data_config(tmp: Path) -> dict:
    if (SHARED / "camvid").is_dir():
        return {"format": "camvid", "root": str(SHARED / "camvid")}
    root = make_dataset(tmp / "synth", n_train=64, n_val=8, n_test=8, size=(360, 480))
    return {"format": "folder", "root": str(root), "classes": CLASSES}


def plain_loop(
    steps: int,
    num_classes: int,
    size: tuple[int, int] = (SIZE, SIZE),
    bf16: bool = False,
    channels_last: bool = False,
    compile: bool = False,
    bf16_weights: bool = False,
    upsample_grads: bool = False,
) -> list[float]:
    """A hand-written training loop on in-memory batches; seconds per step after warm-up."""
    torch.manual_seed(0)
    model = smp.Unet("resnet18", encoder_weights=None, in_channels=3, classes=num_classes)
    x = torch.rand(BATCH, 3, *size) * 4 - 2
    y = torch.randint(0, num_classes, (BATCH, *size))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if bf16_weights:  # Lightning's "bf16-true": weights, activations and gradients in bf16
        model, x = model.to(torch.bfloat16), x.to(torch.bfloat16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    fwd = torch.compile(model) if compile else model
    mode = ChannelsLastUpsampleGrads if upsample_grads else contextlib.nullcontext
    times = []
    for _ in range(steps + WARMUP):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16), mode():
            out = fwd(x)
        loss = torch.nn.functional.cross_entropy(out.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return times[WARMUP:]


def breakdown(steps: int) -> list[dict]:
    """Where the speed comes from: the plain loop with each CPU setting, and input sizes."""
    rows = []
    variants = [
        ("fp32", (SIZE, SIZE), {}),
        ("fp32 + channels_last", (SIZE, SIZE), {"channels_last": True}),
        ("bf16 + channels_last", (SIZE, SIZE), {"bf16": True, "channels_last": True}),
        (
            "bf16 + channels_last + upsample grads",
            (SIZE, SIZE),
            {"bf16": True, "channels_last": True, "upsample_grads": True},
        ),
        (
            "bf16 + channels_last + torch.compile",
            (SIZE, SIZE),
            {"bf16": True, "channels_last": True, "compile": True},
        ),
        (
            "bf16 weights (no autocast) + channels_last",
            (SIZE, SIZE),
            {"bf16_weights": True, "channels_last": True},
        ),
        ("bf16 + channels_last", (352, 480), {"bf16": True, "channels_last": True}),
        ("bf16 + channels_last", (176, 240), {"bf16": True, "channels_last": True}),
    ]
    if not cpu_has_bf16():  # emulated bf16 is slower than fp32: nothing to learn from it
        variants = [v for v in variants if not ({"bf16", "bf16_weights"} & set(v[2]))]
    for name, size, kw in variants:
        t = statistics.median(plain_loop(steps, 11, size, **kw))
        rows.append(
            {
                "variant": name,
                "size": list(size),
                "step_s": round(t, 3),
                "images_per_s": round(BATCH / t, 2),
            }
        )
        print(f"  {name:38s} {size[0]}x{size[1]}: {t:6.3f} s/step {BATCH / t:6.2f} images/s")
    return rows


def conv_kernels() -> dict[str, int]:
    """oneDNN's own account of the bf16 + channels_last step: convolution executions per
    kernel implementation and direction (ONEDNN_VERBOSE=1, the second of two steps, in a
    child process). Only the counts: the verbose output's per-call times vary by 2x between
    runs, as the printing itself costs time."""
    env = dict(os.environ, ONEDNN_VERBOSE="1")
    code = "import train_speed as t; t.WARMUP = 0; t.plain_loop(2, 11, bf16=True, channels_last=1)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).parent,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    convs = [ln.split(",") for ln in out.splitlines() if ln.startswith("onednn_verbose,")]
    convs = [f for f in convs if "exec" in f and "convolution" in f]
    kernels: dict[str, int] = {}
    for f in convs[len(convs) // 2 :]:  # both steps run the same convolutions: the warm one
        i = f.index("convolution")
        key = f"{f[i + 1]} {f[i + 2]}"
        kernels[key] = kernels.get(key, 0) + 1
    return kernels


class StepTimer(Callback):
    def __init__(self, steps: int) -> None:
        self.steps, self.times, self.last = steps, [], None

    def on_train_batch_end(self, trainer, *args) -> None:
        now = time.perf_counter()
        if self.last is not None:
            self.times.append(now - self.last)
        self.last = now
        if len(self.times) >= self.steps + WARMUP:
            trainer.should_stop = True


def seglab_loop(steps: int, data: dict) -> tuple[list[float], str]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config_from_dict(
            {
                "name": "speed",
                "data": data,
                "model": {"name": "unet", "encoder": "resnet18"},
                "augment": {"crop": [SIZE, SIZE], "hflip": 0.5},
                "train": {"epochs": 1, "batch_size": BATCH, "val_every": 1},
            }
        )
        timer = StepTimer(steps)
        run = train(cfg, Path(tmp), callbacks=[timer])
        precision = (run / "train.log").read_text().split("precision: ", 1)[1].split(" (")[0]
    return timer.times[WARMUP:], precision


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument(
        "--breakdown",
        action="store_true",
        help="also time the plain loop per CPU setting and input size",
    )
    ap.add_argument("--tag", default="", help="results train_speed[_breakdown]_<TAG>.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = data_config(Path(tmp))
        plain = plain_loop(args.steps, 11 if data["format"] == "camvid" else 4)
        ours, precision = seglab_loop(args.steps, data)
    p_ips = BATCH / statistics.median(plain)
    s_ips = BATCH / statistics.median(ours)
    print(f"plain fp32 loop : {p_ips:6.2f} images/s (median of {len(plain)} steps)")
    print(f"seglab ({precision}): {s_ips:6.2f} images/s (median of {len(ours)} steps)")
    print(f"ratio           : {s_ips / p_ips:.2f}x")
    suffix = f"_{args.tag}" if args.tag else ""
    save(
        "train_speed" + suffix,
        {
            "model": "smp.Unet(resnet18)",
            "input": [SIZE, SIZE],
            "batch": BATCH,
            "data": data["format"],
            "plain_fp32_images_per_s": round(p_ips, 2),
            "seglab_images_per_s": round(s_ips, 2),
            "seglab_precision": precision,
            "ratio": round(s_ips / p_ips, 2),
            "plain_step_s": plain,
            "seglab_step_s": ours,
        },
    )
    if args.breakdown:
        print("breakdown (plain loop, batch 8, median s/step):")
        rows = breakdown(max(4, args.steps // 3))
        kernels = conv_kernels() if cpu_has_bf16() else {}
        print("convolution kernels of the bf16 + channels_last step (oneDNN verbose):")
        for k, n in sorted(kernels.items(), key=lambda kv: -kv[1]):
            print(f"  {k:70s} {n:4d}")
        save("train_speed_breakdown" + suffix, {"rows": rows, "bf16_conv_kernels": kernels})


if __name__ == "__main__":
    main()
