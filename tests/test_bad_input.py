"""Each kind of bad input: a one-line error naming the file or key and the fix, exit 1,
no traceback without --debug, and nothing earlier lost or overwritten."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import torch
from conftest import run_cli, tiny_config, write_config


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _assert_one_line_error(proc, *needles: str) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in errors[0], errors[0]
    return errors[0]


def _corrupt_image(root: Path) -> str:
    (root / "images" / "train_0003.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return "train_0003.png"


def _missing_mask(root: Path) -> str:
    (root / "masks" / "train_0002.png").unlink()
    return "train_0002.png"


def _missing_image(root: Path) -> str:
    (root / "images" / "val_0017.png").unlink()
    return "val_0017"


def _size_mismatch(root: Path) -> str:
    cv2.imwrite(str(root / "masks" / "train_0005.png"), np.zeros((32, 64), np.uint8))
    return "train_0005.png"


def _stray_values(root: Path) -> str:
    m = cv2.imread(str(root / "masks" / "train_0001.png"), cv2.IMREAD_UNCHANGED)
    m[:4, :4] = 7
    cv2.imwrite(str(root / "masks" / "train_0001.png"), m)
    return "train_0001.png"


def _empty_split(root: Path) -> str:
    (root / "val.txt").write_text("")
    return "split 'val'"


@pytest.mark.parametrize(
    "plant",
    [_corrupt_image, _missing_mask, _missing_image, _size_mismatch, _stray_values, _empty_split],
)
def test_bad_data_stops_training_before_any_run_is_written(
    tmp_path, synth_root, trained_run, plant
):
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    needle = plant(root)
    runs = trained_run.parent
    before = _snapshot(runs)
    cfg = write_config(tmp_path / "c.yaml", tiny_config(root, name=trained_run.name))
    proc = run_cli("train", cfg, "--runs-dir", runs)
    _assert_one_line_error(proc, needle)
    assert _snapshot(runs) == before  # no new run, nothing earlier touched


def test_config_typo_names_key_and_file(tmp_path, synth_root):
    cfg = tiny_config(synth_root)
    cfg["train"]["learning_rate"] = 0.1
    path = write_config(tmp_path / "typo.yaml", cfg)
    proc = run_cli("train", path, "--runs-dir", tmp_path / "runs")
    line = _assert_one_line_error(proc, "train.learning_rate", str(path), "lr")
    assert "allowed" in line
    assert not (tmp_path / "runs").exists()


def test_error_text_in_brackets_is_printed_not_read_as_markup(tmp_path):
    (tmp_path / "images").mkdir()
    proc = run_cli("classic", "otsu", tmp_path)  # a folder data set without classes
    _assert_one_line_error(proc, "e.g. [background, cell]")


def test_debug_shows_traceback(tmp_path, synth_root):
    cfg = tiny_config(synth_root)
    cfg["trian"] = {}
    proc = run_cli("train", write_config(tmp_path / "c.yaml", cfg), "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_unreadable_checkpoint(tmp_path):
    bad = tmp_path / "model.ckpt"
    bad.write_bytes(b"garbage" * 100)
    _assert_one_line_error(run_cli("evaluate", bad), "model.ckpt", "cannot be read")
    _assert_one_line_error(run_cli("predict", tmp_path / "missing-run", tmp_path), "missing-run")


def test_mismatched_checkpoint(tmp_path, trained_run):
    ckpt = torch.load(trained_run / "checkpoints" / "best.ckpt", weights_only=True)
    ckpt["hyper_parameters"]["config"]["model"]["options"]["decoder_channels"] = [64, 32, 16]
    torch.save(ckpt, tmp_path / "edited.ckpt")
    _assert_one_line_error(
        run_cli("evaluate", tmp_path / "edited.ckpt", "--split", "val"),
        "edited.ckpt",
        "does not match",
    )


def test_not_a_seglab_checkpoint(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    _assert_one_line_error(run_cli("evaluate", tmp_path / "other.ckpt"), "not a seglab checkpoint")


def test_predict_wrong_channels_and_corrupt_files_keep_good_outputs(
    tmp_path, synth_root, trained_run
):
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(synth_root / "images" / "test_0022.png", inputs / "good.png")
    tifffile.imwrite(inputs / "two_channel.tiff", np.zeros((2, 20, 30), np.uint8))
    (inputs / "corrupt.png").write_bytes(b"nope")
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier_mask.png").write_bytes(b"kept")
    proc = run_cli("predict", trained_run, inputs, "--out", out)
    line = _assert_one_line_error(proc, "predicted 1 of 3", "2 failed")
    assert "corrupt.png" in line or "two_channel.tiff" in line
    assert (out / "good_mask.png").is_file() and (out / "good_overlay.png").is_file()
    assert (out / "earlier_mask.png").read_bytes() == b"kept"
    proc = run_cli("predict", trained_run, inputs / "two_channel.tiff", "--out", out)
    _assert_one_line_error(proc, "two_channel.tiff", "2 channels", "expects 3")


@pytest.mark.parametrize(
    "model, needle",
    [
        ({"options": {"no_such_option": 1}}, "model.options"),
        ({"encoder_weights": "missing/weights.safetensors"}, "weights.safetensors"),
    ],
)
def test_bad_model_setting_stops_training_before_any_run_is_written(
    tmp_path, synth_root, trained_run, model, needle
):
    runs = trained_run.parent
    before = _snapshot(runs)
    cfg = tiny_config(synth_root, name="bad-model")
    cfg["model"].update(model)
    proc = run_cli("train", write_config(tmp_path / "c.yaml", cfg), "--runs-dir", runs)
    _assert_one_line_error(proc, needle)
    assert _snapshot(runs) == before and not (runs / "bad-model").exists()


def test_failed_library_train_leaves_no_state_for_the_next(tmp_path, synth_root, monkeypatch):
    """In one process (a notebook, a benchmark script) a train() that fails must not leave
    its run directory in the environment, where the next train() would write into it."""
    from seglab.config import config_from_dict
    from seglab.errors import SeglabError
    from seglab.training.train import RUN_ENV, train

    monkeypatch.delenv(RUN_ENV, raising=False)
    bad = tiny_config(synth_root, name="bad", train={"epochs": 1})
    bad["model"]["options"] = {"no_such_option": 1}
    with pytest.raises(SeglabError, match="model.options"):
        train(config_from_dict(bad), tmp_path)
    assert RUN_ENV not in os.environ
    good = train(
        config_from_dict(tiny_config(synth_root, name="good", train={"epochs": 1})), tmp_path
    )
    assert good == tmp_path / "good" and (good / "checkpoints" / "last.ckpt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good"]
