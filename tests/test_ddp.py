"""Lightning DDP on CPU (gloo): 2-process training, and a 2-process evaluation whose
metrics equal a single-process evaluation of the same checkpoint."""

from __future__ import annotations

import json

from conftest import run_cli, tiny_config, write_config
from PIL import Image


def test_ddp_train_and_evaluate_match_single_process(tmp_path, synth_root):
    cfg = write_config(
        tmp_path / "c.yaml",
        tiny_config(synth_root, train={"epochs": 1, "batch_size": 2}, inference={"batch_size": 1}),
    )
    runs = tmp_path / "runs"
    # A fresh interpreter: Lightning starts the second process by re-running the command.
    proc = run_cli("train", cfg, "--runs-dir", runs, "--devices", "2", fresh=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name for p in runs.iterdir()] == ["tiny"]  # one run directory for both processes
    run = runs / "tiny"
    assert (run / "checkpoints" / "best.ckpt").is_file()
    results = {}
    for devices in (1, 2):
        out = tmp_path / f"eval{devices}"
        args = ("evaluate", run, "--split", "val", "--devices", devices, "--out", out)
        proc = run_cli(*args, fresh=devices > 1)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[devices] = json.loads((out / "metrics.json").read_text())
    one, two = results[1], results[2]
    assert one["pixels"] == two["pixels"] > 0  # every pixel counted once, none repeated
    assert one["confusion_matrix"] == two["confusion_matrix"]
    assert one["mIoU"] == two["mIoU"]
    # the report's best/worst gallery ranks every image, not only rank 0's shard: 6 rows
    sizes = {d: Image.open(tmp_path / f"eval{d}" / "gallery.png").size for d in (1, 2)}
    assert sizes[1] == sizes[2], sizes
