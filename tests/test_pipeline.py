"""Train -> run directory -> evaluate -> predict, on a small synthetic data set."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import yaml
from conftest import run_cli, tiny_config, write_config
from lightning.pytorch.callbacks import Callback

from seglab.config import config_from_dict
from seglab.data.dataset import DatasetDefinition, SegDataset, class_weights_from
from seglab.evaluation.evaluate import evaluate
from seglab.evaluation.metrics import confusion_matrix, metrics_from_confusion
from seglab.inference.predictor import Predictor
from seglab.training.train import train


def test_run_directory_is_complete(trained_run):
    files = {p.name for p in trained_run.iterdir()}
    assert {
        "config.yaml",
        "metrics.json",
        "metrics.csv",
        "summary.json",
        "train.log",
        "checkpoints",
    } <= files
    assert {p.name for p in (trained_run / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}
    epochs = json.loads((trained_run / "metrics.json").read_text())
    assert [e["epoch"] for e in epochs] == [0, 1, 2]
    assert all(0 <= e["val_mIoU"] <= 1 and e["train_loss"] > 0 for e in epochs)
    assert len((trained_run / "metrics.csv").read_text().strip().splitlines()) == 4
    cfg = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert config_from_dict(cfg).train.epochs == 3
    assert "precision:" in (trained_run / "train.log").read_text()
    # checkpoints hold only tensors and plain data: they load with weights_only
    ckpt = torch.load(trained_run / "checkpoints" / "best.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["meta"]["classes"][0] == "background"


def test_training_learns(trained_run):
    epochs = json.loads((trained_run / "metrics.json").read_text())
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    summary = json.loads((trained_run / "summary.json").read_text())
    assert summary["best_val_mIoU"] > 0.3  # well above chance on 4 classes


def test_evaluate_equals_validation_and_predictor(trained_run, synth_root):
    """One inference path: evaluate on val reproduces the best epoch's validation mIoU, and
    per-image Predictor masks scored by hand give the same metrics as evaluate."""
    summary = json.loads((trained_run / "summary.json").read_text())
    metrics, out = evaluate(trained_run, "val")
    assert metrics["mIoU"] == pytest.approx(summary["best_val_mIoU"], abs=1e-6)
    assert (out / "metrics.json").is_file() and (out / "per_class.csv").is_file()

    predictor = Predictor.from_checkpoint(trained_run)
    cfg = config_from_dict(yaml.safe_load((trained_run / "config.yaml").read_text()))
    ds = SegDataset(DatasetDefinition.from_config(cfg.data), "val")
    cm = sum(
        confusion_matrix(ds.load(i)[1], predictor.predict(ds.load(i)[0]), 4, 255)
        for i in range(len(ds))
    )
    by_hand = metrics_from_confusion(cm, predictor.meta["classes"])
    assert by_hand["mIoU"] == pytest.approx(metrics["mIoU"], abs=1e-9)
    np.testing.assert_array_equal(np.array(metrics["confusion_matrix"]), cm)


@pytest.mark.parametrize("shape", [(97, 131, 3), (97, 131, 1), (33, 200, 4), (5, 7, 3)])
def test_predict_any_size_and_channels(trained_run, shape):
    predictor = Predictor.from_checkpoint(trained_run)
    image = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    mask = predictor.predict(image)
    assert mask.shape == shape[:2] and mask.dtype == np.uint8 and mask.max() < 4


def test_padding_does_not_change_divisible_inputs(trained_run):
    """Cropping back after padding: the top-left of a padded prediction matches a direct one."""
    predictor = Predictor.from_checkpoint(trained_run)
    predictor.backend.precision = "fp32"
    x = torch.from_numpy(np.random.default_rng(1).integers(0, 255, (1, 3, 64, 96))).float()
    with torch.no_grad():
        direct = predictor.backend.model(x)
        via = predictor.logits(x)
    torch.testing.assert_close(via, direct)


def test_scale_policy_returns_input_size(trained_run):
    predictor = Predictor.from_checkpoint(trained_run)
    predictor.scale = 0.5
    out = predictor.logits(torch.zeros(2, 3, 75, 101))
    assert out.shape == (2, 4, 75, 101)


def test_predict_cli_writes_masks_and_overlays(tmp_path, trained_run, synth_root):
    src = synth_root / "images" / "test_0022.png"
    img = cv2.imread(str(src))
    odd = cv2.resize(img, (131, 97))
    cv2.imwrite(str(tmp_path / "odd.jpg"), odd)
    proc = run_cli(
        "predict",
        trained_run,
        src,
        tmp_path / "odd.jpg",
        "--out",
        tmp_path / "p",
        "--backend",
        "torch",
    )
    assert proc.returncode == 0, proc.stderr
    mask = cv2.imread(str(tmp_path / "p" / "odd_mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (97, 131) and mask.dtype == np.uint8 and mask.max() < 4
    ov = cv2.imread(str(tmp_path / "p" / "odd_overlay.png"))
    assert ov.shape == (97, 131, 3)
    m2 = cv2.imread(str(tmp_path / "p" / "test_0022_mask.png"), cv2.IMREAD_UNCHANGED)
    expected = Predictor.from_checkpoint(trained_run).predict_file(src)[1]
    np.testing.assert_array_equal(m2, expected)


def test_new_run_never_overwrites_and_seed_repeats(tmp_path, synth_root):
    cfg = config_from_dict(tiny_config(synth_root, train={"epochs": 1}))
    a = train(cfg, tmp_path)
    b = train(cfg, tmp_path)
    assert a.name == "tiny" and b.name == "tiny-2"
    ma = json.loads((a / "metrics.json").read_text())[0]
    mb = json.loads((b / "metrics.json").read_text())[0]
    assert ma["train_loss"] == mb["train_loss"] and ma["val_mIoU"] == mb["val_mIoU"]


def test_library_training_does_not_print_lightnings_noise(tmp_path, synth_root):
    """Benchmarks and library users call train() without the CLI: the warning Lightning's own
    code triggers in torch 2.14 and its GPU/TPU notices on a CPU must not reach them either
    (a fresh process, its own filters)."""
    path = write_config(tmp_path / "c.yaml", tiny_config(synth_root, train={"epochs": 1}))
    code = (
        "import sys; from pathlib import Path; from seglab.config import load_config; "
        "from seglab.training.train import train; "
        "train(load_config(Path(sys.argv[1])), Path(sys.argv[2]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path), str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "runs" / "tiny" / "checkpoints" / "last.ckpt").exists()
    assert "LeafSpec" not in proc.stderr
    assert "available: False" not in proc.stderr and "stepping batches" not in proc.stderr


def test_resume_continues_from_last_checkpoint(tmp_path, synth_root):
    path = write_config(tmp_path / "c.yaml", tiny_config(synth_root, train={"epochs": 1}))
    proc = run_cli("train", path, "--runs-dir", tmp_path / "runs")
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "runs" / "tiny"
    log = (run / "train.log").read_text()
    assert "litlogger" not in proc.stderr + proc.stdout + log  # Lightning's ad is dropped
    # and so are its note on the train loader and the deprecation warning its code triggers
    assert "stepping batches" not in proc.stderr + log and "LeafSpec" not in proc.stderr
    first_best = (run / "checkpoints" / "last.ckpt").read_bytes()
    proc = run_cli("train", "--resume", run, "--set", "train.epochs=2")
    assert proc.returncode == 0, proc.stderr
    epochs = json.loads((run / "metrics.json").read_text())
    assert [e["epoch"] for e in epochs] == [0, 1]
    assert (run / "checkpoints" / "last.ckpt").read_bytes() != first_best
    assert not (tmp_path / "runs" / "tiny-2").exists()


def test_resume_continues_the_time_budget(tmp_path, synth_root):
    """A run with train.max_minutes that stops and resumes keeps its clock: the checkpoint
    records the training time, so the budget and the learning-rate schedule that follows it
    continue where they were rather than starting a new budget."""
    from seglab.training.task import lr_factor

    cfg = tiny_config(synth_root, train={"epochs": 1, "max_minutes": 10, "scheduler": "cosine"})
    run = train(config_from_dict(cfg), tmp_path / "runs")
    last = run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    assert 0 < ckpt["seglab_train_seconds"] < 600
    ckpt["seglab_train_seconds"] = 600.0  # as if the 10 minutes were spent
    torch.save(ckpt, last)
    proc = run_cli("train", "--resume", run, "--set", "train.epochs=6")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((run / "metrics.json").read_text())
    assert [r["epoch"] for r in rows] == [0, 1]  # the spent budget ends the resumed epoch
    assert rows[1]["elapsed_s"] >= 600
    assert rows[1]["lr"] <= cfg["train"]["lr"] * lr_factor("cosine", 0.99) + 1e-12
    assert json.loads((run / "summary.json").read_text())["train_seconds"] >= 600


def test_clock_driven_lr_follows_rank_zeros_clock(tmp_path, synth_root, monkeypatch):
    """With a time budget the LR follows the clock; under DDP every process must use the
    same (rank 0's, broadcast) clock, or each replica steps with its own LR and the replicas
    drift apart. Here the strategy's broadcast stands for rank 0 at 90% of the budget."""
    from lightning.pytorch.strategies import SingleDeviceStrategy

    from seglab.training.task import lr_factor

    def rank_zero(self, obj, src=0):  # rank 0's clock: 9 of 10 minutes; and its stop rule
        return 540.0 if isinstance(obj, float) else True if isinstance(obj, bool) else obj

    monkeypatch.setattr(SingleDeviceStrategy, "broadcast", rank_zero)
    cfg = tiny_config(synth_root, train={"epochs": 50, "max_minutes": 10, "scheduler": "cosine"})
    run = train(config_from_dict(cfg), tmp_path / "runs")
    (row,) = json.loads((run / "metrics.json").read_text())  # rank 0 stopped it after one
    assert row["elapsed_s"] < 60  # this process's own clock is at the start of the budget
    expected = cfg["train"]["lr"] * lr_factor("cosine", 0.9)
    assert row["lr"] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("name", ["pspnet", "deeplabv3plus"])
def test_training_input_need_not_fit_the_stride(tmp_path, synth_root, name):
    # inference.scale 0.7 trains on 45x45 images; PSPNet needs multiples of 8 and
    # DeepLab v3+ of 16, so the training step pads (as inference does) and crops the logits
    cfg = config_from_dict(
        tiny_config(
            synth_root,
            model={"name": name, "encoder": "resnet18", "options": {}},
            train={"epochs": 1, "max_steps": 2},
            inference={"scale": 0.7},
        )
    )
    run = train(cfg, tmp_path)
    epochs = json.loads((run / "metrics.json").read_text())
    assert epochs[-1]["step"] == 2


def test_max_steps_stops_mid_epoch_and_schedule_ends(tmp_path, synth_root):
    # 16 training images, batch 4: 4 steps per epoch; 6 steps end inside the second epoch
    cfg = config_from_dict(
        tiny_config(synth_root, train={"epochs": 50, "max_steps": 6, "scheduler": "cosine"})
    )
    run = train(cfg, tmp_path)
    epochs = json.loads((run / "metrics.json").read_text())
    assert [e["epoch"] for e in epochs] == [0, 1]
    assert epochs[-1]["step"] == 6
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert ckpt["global_step"] == 6
    assert epochs[-1]["lr"] < 0.2 * cfg.train.lr  # cosine over 6 steps, not over 50 epochs


@pytest.mark.parametrize("scheme", ["median_frequency", "inverse_log"])
def test_computed_class_weights_reach_the_loss(tmp_path, synth_root, scheme):
    cfg = config_from_dict(
        tiny_config(synth_root, loss={"class_weights": scheme}, train={"max_steps": 1})
    )
    run = train(cfg, tmp_path)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    d = DatasetDefinition.from_config(cfg.data)
    want = class_weights_from(SegDataset(d, "train"), scheme)
    assert np.allclose(ckpt["state_dict"]["loss.weights"].numpy(), want, atol=1e-4)
    assert ckpt["hyper_parameters"]["class_weights"] == pytest.approx(want, abs=1e-4)
    # the two schemes differ: median frequency is the stronger balance
    other = "inverse_log" if scheme == "median_frequency" else "median_frequency"
    assert not np.allclose(want, class_weights_from(SegDataset(d, "train"), other))


def test_ema_is_validated_saved_and_resumed(tmp_path, synth_root):
    """train.ema_decay: the checkpoint's weights are the exponential moving average of the
    raw weights after every step (recomputed here), validation scored that average, and
    --resume continues from the raw weights."""
    decay = 0.8
    seen: list[dict] = []

    class Record(Callback):
        def on_train_batch_end(self, trainer, task, *args) -> None:
            seen.append({k: v.detach().clone() for k, v in task.model.named_parameters()})

    cfg = config_from_dict(tiny_config(synth_root, train={"epochs": 2, "ema_decay": decay}))
    run = train(cfg, tmp_path, callbacks=[Record()])
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert len(seen) == ckpt["global_step"] == 8
    avg = dict(seen[0])
    for w in seen[1:]:
        avg = {k: decay * avg[k] + (1 - decay) * w[k] for k in avg}
    for name in ("net.encoder.conv1.weight", "net.segmentation_head.0.weight"):
        saved, raw = (
            ckpt["state_dict"][f"model.{name}"],
            ckpt["current_model_state"][f"model.{name}"],
        )
        torch.testing.assert_close(saved, avg[name], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(raw, seen[-1][name])
        assert not torch.allclose(saved, raw)
    summary = json.loads((run / "summary.json").read_text())
    metrics, _ = evaluate(run, "val")  # the averaged weights, as saved
    assert metrics["mIoU"] == pytest.approx(summary["best_val_mIoU"], abs=1e-6)

    seen.clear()
    cfg3 = config_from_dict(tiny_config(synth_root, train={"epochs": 3, "ema_decay": decay}))
    train(cfg3, tmp_path, resume=run, callbacks=[Record()])
    resumed = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 12 and len(seen) == 4
    for w in seen:
        avg = {k: decay * avg[k] + (1 - decay) * w[k] for k in avg}
    name = "net.encoder.conv1.weight"
    torch.testing.assert_close(
        resumed["state_dict"][f"model.{name}"], avg[name], rtol=1e-4, atol=1e-6
    )


def test_legacy_scheduler_name_loads_as_what_it_ran():
    # runs saved before the fix record the old default "onecycle", which trained with poly
    base = {"name": "x", "data": {"format": "camvid", "root": "."}}
    assert config_from_dict(base).train.scheduler == "cosine"
    assert config_from_dict({**base, "train": {"scheduler": "onecycle"}}).train.scheduler == "poly"


@pytest.mark.parametrize(("patience", "val_every", "checks"), [(5, 1, 5), (5, 2, 3), (4, 4, 1)])
def test_early_stopping_patience_counts_epochs(tmp_path, synth_root, patience, val_every, checks):
    """train.early_stopping_patience is in epochs; Lightning's EarlyStopping counts
    validations, which come every train.val_every epochs."""
    from lightning.pytorch.callbacks import EarlyStopping

    from seglab.training.train import _callbacks

    cfg = config_from_dict(
        tiny_config(synth_root, train={"early_stopping_patience": patience, "val_every": val_every})
    )
    (stop,) = [c for c in _callbacks(cfg, tmp_path, ["a"]) if isinstance(c, EarlyStopping)]
    assert stop.patience == checks


def test_resume_does_not_fetch_the_initial_weights_again(tmp_path, synth_root, trained_run):
    """--resume takes every weight from last.ckpt: the run that model.init_from named may be
    gone by then (and encoder_weights are not downloaded again)."""
    import shutil

    source = tmp_path / "source.ckpt"
    shutil.copy(trained_run / "checkpoints" / "last.ckpt", source)
    cfg = tiny_config(synth_root, train={"epochs": 1})
    cfg["model"]["init_from"] = str(source)
    run = train(config_from_dict(cfg), tmp_path / "runs")
    source.unlink()
    proc = run_cli("train", "--resume", run, "--set", "train.epochs=2")
    assert proc.returncode == 0, proc.stderr
    assert [r["epoch"] for r in json.loads((run / "metrics.json").read_text())] == [0, 1]
