"""seglab compare and learning-curve, and the nested training subsets behind the curve."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import run_cli, tiny_config

from seglab.config import DataConfig, config_from_dict
from seglab.data.dataset import DatasetDefinition, SegDataset
from seglab.evaluation.compare import compare, learning_curve
from seglab.inference.predictor import load_checkpoint


def test_train_fractions_are_nested_random_subsets(synth_root):
    d = DatasetDefinition.from_config(
        DataConfig(format="folder", root=synth_root, classes=["a", "b", "c", "d"])
    )
    full = [p.image for p in SegDataset(d, "train", cache=False).pairs]
    sets = [
        {p.image for p in SegDataset(d, "train", cache=False, fraction=f, seed=3).pairs}
        for f in (0.25, 0.5, 1.0)
    ]
    assert [len(s) for s in sets] == [4, 8, 16]
    assert sets[0] < sets[1] < sets[2] == set(full)
    other = {p.image for p in SegDataset(d, "train", cache=False, fraction=0.25, seed=4).pairs}
    assert other != sets[0]  # the seed decides which images


def test_compare_two_runs(trained_run, tmp_path, synth_root):
    from seglab.training.train import train

    cfg = tiny_config(synth_root, name="other", train={"epochs": 1}, model={"name": "fpn"})
    cfg["model"]["options"] = {}
    other = train(config_from_dict(cfg), tmp_path / "runs")
    rows, out = compare([trained_run, other], tmp_path / "cmp", size=(64, 96), backend="torch")
    model, _, _ = load_checkpoint(trained_run)
    assert rows[0]["params_m"] == round(sum(p.numel() for p in model.parameters()) / 1e6, 2)
    assert [r["architecture"] for r in rows] == ["unet", "fpn"]
    assert all(r["latency_ms"] > 0 for r in rows)
    assert rows[1]["mIoU"] == json.loads((other / "summary.json").read_text())["best_val_mIoU"]
    table = list(csv.reader((out / "compare.csv").open()))
    assert table[0][0] == "run" and [r[0] for r in table[1:]] == [trained_run.name, "other"]
    assert (out / "miou_vs_latency.png").stat().st_size > 5000
    assert (
        "fpn" in (out / "compare.md").read_text() and "<img" in (out / "compare.html").read_text()
    )


def test_compare_names_each_miou_source_and_warns_on_other_classes(
    trained_run, tmp_path, caplog, monkeypatch
):
    import logging
    import shutil

    import torch

    from seglab.inference.predictor import resolve_checkpoint

    a, b = tmp_path / "a", tmp_path / "b"
    for run in (a, b):
        shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("eval"))
    (a / "eval" / "val").mkdir(parents=True)
    metrics = {"split": "val", "mIoU": 0.5, "per_class": {}}
    (a / "eval" / "val" / "metrics.json").write_text(json.dumps(metrics))
    ckpt_path = resolve_checkpoint(b)
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["meta"]["classes"] = ["x", "y", "z", "w"]
    torch.save(ckpt, ckpt_path)
    monkeypatch.setattr(logging.getLogger("seglab"), "propagate", True)  # for caplog
    with caplog.at_level(logging.WARNING, logger="seglab"):
        rows, out = compare([a, b], tmp_path / "cmp", size=None)
    sources = ["val evaluation", "best validation in training"]
    assert [r["mIoU_source"] for r in rows] == sources and rows[0]["mIoU"] == 0.5
    assert [r["mIoU_source"] for r in csv.DictReader((out / "compare.csv").open())] == sources
    assert [r["mIoU_source"] for r in json.loads((out / "compare.json").read_text())] == sources
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("different classes" in w and "b: x, y, z, w" in w for w in warnings), warnings
    assert any("different splits" in w for w in warnings), warnings


def test_compare_cli_bad_size(trained_run, tmp_path):
    proc = run_cli("compare", trained_run, "--size", "big", "--out", tmp_path / "c")
    assert proc.returncode == 1 and "--size 'big'" in proc.stderr


def test_learning_curve_trains_each_share(tmp_path, synth_root):
    """Equal optimizer steps per share (32, batch 4): 4 images make 32 one-step epochs,
    validated every 4th; 16 images make 8 epochs, validated after each."""
    cfg = config_from_dict(
        tiny_config(synth_root, name="lc", train={"epochs": 1000, "max_steps": 32})
    )
    rows = learning_curve(cfg, [1.0, 0.25], tmp_path / "runs", "val", tmp_path / "lc")
    assert [(r["fraction"], r["train_images"]) for r in rows] == [(0.25, 4), (1.0, 16)]
    assert all(0 <= r["mIoU"] <= 1 for r in rows)
    assert (tmp_path / "lc" / "learning_curve.png").is_file()
    import yaml

    small, full = (
        yaml.safe_load((tmp_path / "runs" / f"lc-lc{p}" / "config.yaml").read_text())
        for p in (25, 100)
    )
    assert small["data"]["train_fraction"] == 0.25
    assert (small["train"]["val_every"], full["train"]["val_every"]) == (4, 1)
    validated = [
        r["epoch"]
        for r in json.loads((tmp_path / "runs" / "lc-lc25" / "metrics.json").read_text())
        if r.get("val_mIoU") is not None
    ]
    assert 6 <= len(validated) <= 9
    with pytest.raises(Exception, match="fractions"):
        learning_curve(cfg, [0.0], tmp_path / "runs", "val", tmp_path / "lc")
