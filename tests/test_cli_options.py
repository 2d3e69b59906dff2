"""Options that do not apply are refused in one line; user strings print as given."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from conftest import run_cli, tiny_config, write_config

import seglab.benchmark
from seglab.cli import main


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _error_line(proc) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def test_resume_refuses_a_config_and_non_train_overrides(tmp_path, synth_root, trained_run):
    before = _snapshot(trained_run)
    cfg = write_config(tmp_path / "c.yaml", tiny_config(synth_root))
    err = _error_line(run_cli("train", cfg, "--resume", trained_run))
    assert "give either CONFIG or --resume RUN" in err
    proc = run_cli("train", "--resume", trained_run, "--set", "model.encoder=resnet34")
    assert "--set model.encoder" in _error_line(proc)
    assert "--seed" in _error_line(run_cli("train", "--resume", trained_run, "--seed", "3"))
    assert _snapshot(trained_run) == before  # config.yaml and checkpoints untouched


def test_predict_refuses_semantic_options_for_an_instance_run(tmp_path, instance_run, discs_dsb):
    out = tmp_path / "pred"
    proc = run_cli(
        "predict",
        instance_run,
        discs_dsb / "images",
        "--out",
        out,
        "--backend",
        "openvino",
        "--tta",
        "hflip",
        "--tile",
        "64",
        "--max-pixels",
        "1000",
    )
    err = _error_line(proc)
    for option in ("--backend", "--tta", "--tile", "--max-pixels"):
        assert option in err
    assert not out.exists()


def test_evaluate_refuses_options_of_the_other_mode(tmp_path, synth_root, trained_run):
    preds = tmp_path / "preds"
    preds.mkdir()
    for stem in (synth_root / "val.txt").read_text().split():  # perfect predictions
        shutil.copy(synth_root / "masks" / f"{stem}.png", preds / f"{stem}_mask.png")
    cfg = write_config(tmp_path / "c.yaml", tiny_config(synth_root))
    proc = run_cli(
        "evaluate", cfg, "--predictions", preds, "--data-root", synth_root, "--split", "val"
    )
    assert "--data-root" in _error_line(proc)
    proc = run_cli("evaluate", trained_run, "--format", "folder", "--out", tmp_path / "ev")
    assert "--format" in _error_line(proc)
    assert not (tmp_path / "ev").exists()


def test_predict_twice_into_the_input_folder(tmp_path, synth_root, trained_run):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in sorted(p.name for p in (synth_root / "images").iterdir())[:2]:
        shutil.copy(synth_root / "images" / name, photos / f"p{len(list(photos.iterdir()))}.png")
    for _ in range(2):
        proc = run_cli("predict", trained_run, photos, "--out", photos)
        assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in photos.iterdir()) == [
        "p0.png",
        "p0_mask.png",
        "p0_overlay.png",
        "p1.png",
        "p1_mask.png",
        "p1_overlay.png",
    ]


def test_demo_refuses_a_workdir_with_other_files(tmp_path):
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "data" / "mine.txt").write_text("the user's notes")
    err = _error_line(run_cli("demo", "--workdir", work, "--epochs", "1"))
    assert "--workdir" in err
    assert _snapshot(work) == {"data/mine.txt": hashlib.md5(b"the user's notes").hexdigest()}


def _fake_bench(rows):
    def bench(source, *args):
        return {"source": str(source), "threads": 1, "rows": rows}

    return bench


def test_benchmark_fails_when_every_measurement_fails(monkeypatch, capsys, trained_run):
    """In process: the measurements are replaced, which a CLI subprocess cannot do."""
    long = "the measurement process timed out after 600 s and was killed " + "x" * 40
    failed = {"backend": "torch", "precision": "fp32", "batch": 1, "error": long}
    monkeypatch.setattr(seglab.benchmark, "benchmark", _fake_bench([failed, failed]))
    with pytest.raises(SystemExit) as exit_:
        main(["benchmark", str(trained_run)])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert f"torch fp32 1: {long}" in err.splitlines()
    assert "every measurement" in err
    ok = {"backend": "torch", "precision": "fp32", "batch": 4, "latency_p50_ms": 1.0}
    ok |= {"latency_p90_ms": 1.0, "images_per_s": 4.0, "peak_rss_mb": 1}
    monkeypatch.setattr(seglab.benchmark, "benchmark", _fake_bench([failed, ok]))
    with pytest.raises(SystemExit) as exit_:
        main(["benchmark", str(trained_run)])
    assert exit_.value.code == 0
    assert f"torch fp32 1: {long}" in capsys.readouterr().err.splitlines()


def test_models_profile_names_a_bad_size():
    err = _error_line(run_cli("models", "--profile", "--size", "big"))
    assert "--size 'big'" in err


def test_done_line_shows_a_name_with_brackets(tmp_path, synth_root):
    cfg = tiny_config(synth_root, name="unet[aug]", train={"epochs": 1})
    proc = run_cli("train", write_config(tmp_path / "c.yaml", cfg), "--runs-dir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    done = "".join(proc.stderr.split("done: run directory")[1].split())  # unwrapped
    assert done.startswith(str(tmp_path / "unet[aug]")), proc.stderr
