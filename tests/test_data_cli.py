"""The `seglab data ...` commands, end to end through the CLI."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
from conftest import run_cli, tiny_config, write_config


def test_data_check_lists_problems_and_exits_1(tmp_path, synth_root):
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    (root / "images" / "train_0003.png").write_bytes(b"broken")
    cv2.imwrite(str(root / "masks" / "train_0005.png"), np.zeros((32, 64), np.uint8))
    cfg = write_config(tmp_path / "c.yaml", tiny_config(root))
    proc = run_cli("data", "check", cfg)
    assert proc.returncode == 1, proc.stderr
    assert "train_0003.png" in proc.stdout and "unreadable_image" in proc.stdout
    assert "train_0005.png" in proc.stdout and "size_mismatch" in proc.stdout
    assert "Traceback" not in proc.stderr
    clean = write_config(tmp_path / "clean.yaml", tiny_config(synth_root))
    proc = run_cli("data", "check", clean)
    assert proc.returncode == 0 and "no problems" in proc.stderr


def test_data_stats_split_convert(tmp_path, synth_root):
    cfg = write_config(tmp_path / "c.yaml", tiny_config(synth_root))
    proc = run_cli("data", "stats", cfg, "--out", tmp_path / "stats")
    assert proc.returncode == 0, proc.stderr
    stats = json.loads((tmp_path / "stats" / "stats.json").read_text())
    assert stats["classes"][0] == "background" and len(stats["mean"]) == 3
    assert (tmp_path / "stats" / "class_frequency.png").stat().st_size > 1000

    proc = run_cli("data", "split", cfg, "--seed", "3", "--out", tmp_path / "lists")
    assert proc.returncode == 0, proc.stderr
    lists = {
        p: (tmp_path / "lists" / f"{p}.txt").read_text().split() for p in ("train", "val", "test")
    }
    assert sum(map(len, lists.values())) == 28 and not set(lists["train"]) & set(lists["val"])
    proc = run_cli("data", "split", cfg, "--seed", "3", "--out", tmp_path / "lists")
    assert proc.returncode == 1 and "error:" in proc.stderr  # existing lists are not replaced

    proc = run_cli("data", "convert", cfg, "--out", tmp_path / "conv", "--split", "val")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("data", "check", tmp_path / "conv" / "dataset.yaml", "--split", "val")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("data", "convert", cfg, "--out", tmp_path / "conv")
    assert proc.returncode == 1 and "conv" in proc.stderr  # never writes into a non-empty folder


def test_data_stats_of_an_unlabelled_split(tmp_path):
    """ISBI 2012's test split has no masks: no class weights, shown as n/a."""
    (tmp_path / "isbi" / "test" / "images").mkdir(parents=True)
    for i in range(30):
        cv2.imwrite(str(tmp_path / "isbi" / "test" / "images" / f"{i:02d}.png"), np.zeros((8, 8)))
    args = ("data", "stats", tmp_path / "isbi", "--format", "isbi2012", "--split", "test")
    proc = run_cli(*args, "--out", tmp_path / "stats")
    assert proc.returncode == 0, proc.stderr
    assert "no masks" in proc.stdout and "n/a" in proc.stdout
    stats = json.loads((tmp_path / "stats" / "stats.json").read_text())
    assert stats["splits"]["test"]["labelled"] == 0 and "class_weights" not in stats


def test_data_fetch_offline_is_one_line(tmp_path):
    proc = run_cli(
        "data", "fetch", "isbi2012", "--to", tmp_path, "--url-base", "http://127.0.0.1:9"
    )
    assert proc.returncode == 1
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "cannot download isbi2012" in errors[0]
    assert "Traceback" not in proc.stderr
