"""The tests' CLI runner: a forked child of the fork server behaves as a fresh
``python -m seglab`` does (exit code, stdout, stderr, working directory)."""

from __future__ import annotations

from conftest import run_cli, tiny_config, write_config


def test_forked_cli_matches_a_fresh_interpreter(tmp_path, synth_root):
    cfg = tiny_config(synth_root)
    cfg["train"]["learning_rate"] = 0.1  # a config typo: exit 1 and a one-line error
    write_config(tmp_path / "typo.yaml", cfg)
    for args in (("train", "typo.yaml"), ("models",), ("evaluate", "no-such-run")):
        forked = run_cli(*args, cwd=tmp_path)  # relative paths: the child's cwd is honoured
        fresh = run_cli(*args, cwd=tmp_path, fresh=True)
        assert (forked.returncode, forked.stdout, forked.stderr) == (
            fresh.returncode,
            fresh.stdout,
            fresh.stderr,
        ), args
    assert forked.returncode == 1 and "no-such-run" in forked.stderr
