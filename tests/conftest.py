"""Shared fixtures: a small synthetic data set, tiny configs, and the CLI in a subprocess."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from seglab.data.synthetic import CLASSES, make_dataset

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"


def shared_dataset(name: str) -> Path:
    """Path of a real data set in ../shared/datasets, or skip the test saying why."""
    p = SHARED / name
    if not p.is_dir():
        pytest.skip(f"real data set {name} not found at {p} (see ../shared/datasets/README.md)")
    return p


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Converted-model cache (OpenVINO IR) in a temporary folder, not the user's."""
    os.environ["SEGLAB_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    return make_dataset(
        tmp_path_factory.mktemp("synth"), n_train=16, n_val=6, n_test=6, size=(64, 64), seed=1
    )


def tiny_config(root: Path, **sections) -> dict:
    cfg = {
        "name": "tiny",
        "seed": 0,
        "data": {"format": "folder", "root": str(root), "classes": CLASSES},
        "model": {
            "name": "unet",
            "encoder": "resnet18",
            "options": {"encoder_depth": 3, "decoder_channels": [32, 16, 8]},
        },
        "loss": {"name": "ce+dice"},
        "augment": {"hflip": 0.5},
        "train": {"epochs": 2, "batch_size": 4, "lr": 0.003, "num_workers": 0},
        "inference": {"batch_size": 4},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            cfg.setdefault(key, {}).update(value)
        else:
            cfg[key] = value
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


# Keys a child may change from the fork server's environment (the server's is the one it
# started with): seglab reads them when a command runs; pytest sets PYTEST_CURRENT_TEST for
# each test; once a test trains in process, Lightning's seed_everything has set
# PL_GLOBAL_SEED / PL_SEED_WORKERS, importing lightning.fabric has set
# PYTORCH_NVML_BASED_CUDA_CHECK=1 (as it does in the server) and torch's inductor
# TORCHINDUCTOR_CACHE_DIR, all read at run time. Before these were listed, every CLI call
# after the first in-process training ran a fresh interpreter. Any other change
# (HF_HUB_OFFLINE is read when huggingface_hub is imported) runs a fresh interpreter.
_RUNTIME_ENV = (
    "SEGLAB_",
    "PYTEST_",
    "PL_",
    "PYTORCH_NVML_BASED_CUDA_CHECK",
    "TORCHINDUCTOR_CACHE_DIR",
)


class _ForkServer:
    """Client of tests/cli_forkserver.py: the CLI in a forked child of a process that
    imported torch and Lightning once, instead of a new interpreter per call."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("cli_forkserver.py"))],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        self.pending = b""  # read from the pipe but not yet returned
        self._read(timeout=300)  # {"ready": true}

    def _read(self, timeout: float) -> dict:
        """The next reply line. Our own buffer, not readline(): a line already buffered
        would be invisible to select()."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                raise TimeoutError
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError(f"CLI fork server exited with {self.proc.wait()}")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return json.loads(line)

    def compatible(self, env: dict[str, str]) -> bool:
        keys = set(env) | set(self.env)
        changed = {k for k in keys if env.get(k) != self.env.get(k)}
        return all(k.startswith(_RUNTIME_ENV) for k in changed)

    def run(self, args: list[str], cwd: Path | None, env: dict[str, str], timeout: float):
        with tempfile.TemporaryDirectory() as tmp:
            out, err = Path(tmp, "out"), Path(tmp, "err")
            req = {"args": args, "cwd": str(cwd or os.getcwd()), "env": env}
            req |= {"stdout": str(out), "stderr": str(err)}
            data = memoryview(json.dumps(req).encode() + b"\n")
            while data:  # an unbuffered pipe may take part of a long request
                data = data[self.proc.stdin.write(data) :]
            pid = self._read(timeout=60)["pid"]
            try:
                rc = self._read(timeout=timeout)["rc"]
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                self._read(timeout=60)
                raise subprocess.TimeoutExpired(args, timeout) from None
            return subprocess.CompletedProcess(
                [sys.executable, "-m", "seglab", *args], rc, out.read_text(), err.read_text()
            )

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


_SERVER: _ForkServer | None = None


@pytest.fixture(scope="session", autouse=True)
def _close_fork_server():
    yield
    if _SERVER is not None:
        _SERVER.close()


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 600, fresh: bool = False
) -> subprocess.CompletedProcess:
    """Run ``python -m seglab ARGS`` and capture its output.

    By default the command runs in a forked child of a fork server that imported the
    heavy libraries once (tests/cli_forkserver.py), which saves 5-7 s per call.
    ``fresh=True``, an environment change the server cannot honour, or
    ``SEGLAB_TEST_FRESH_CLI=1`` run a new interpreter instead.
    """
    global _SERVER
    args = [str(a) for a in args]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    if not fresh and not os.environ.get("SEGLAB_TEST_FRESH_CLI"):
        if _SERVER is None:
            _SERVER = _ForkServer(env)
        if _SERVER.compatible(env):
            return _SERVER.run(args, cwd, env, timeout)
    return subprocess.run(
        [sys.executable, "-m", "seglab", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, synth_root) -> Path:
    """One tiny trained run shared by the tests that only read it."""
    from seglab.config import config_from_dict
    from seglab.training.train import train

    runs = tmp_path_factory.mktemp("runs")
    return train(config_from_dict(tiny_config(synth_root, train={"epochs": 3})), runs)


def _disc(shape: tuple[int, int], cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


@pytest.fixture(scope="session")
def discs_dsb(tmp_path_factory) -> Path:
    """A dsb2018 'shared' layout of touching bright discs: 6 train, 2 val, 64 x 64."""
    root = tmp_path_factory.mktemp("discs")
    for sub in ("images", "masks", "instances"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    ids = []
    for n in range(8):
        inst = np.zeros((64, 64), np.int32)
        for k in range(1, 6):
            cy, cx = rng.integers(10, 54, 2)
            inst[_disc((64, 64), cy, cx, rng.uniform(5, 9)) & (inst == 0)] = k
        img = np.where(inst > 0, 200, 30).astype(np.uint8)
        img = np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)
        name = f"im{n}"
        cv2.imwrite(str(root / "images" / f"{name}.png"), np.dstack([img] * 3))
        cv2.imwrite(str(root / "masks" / f"{name}.png"), (inst > 0).astype(np.uint8))
        cv2.imwrite(str(root / "instances" / f"{name}.png"), inst.astype(np.uint16))
        ids.append(name)
    (root / "train.txt").write_text("\n".join(ids[:6]) + "\n")
    (root / "val.txt").write_text("\n".join(ids[6:]) + "\n")
    return root


@pytest.fixture(scope="session")
def instance_run(tmp_path_factory, discs_dsb) -> Path:
    """A boundary U-Net (``task: instance``) trained 10 epochs on the discs, shared by the
    tests that only read it."""
    from seglab.config import config_from_dict
    from seglab.training.train import train

    raw = {
        "name": "inst",
        "task": "instance",
        "data": {"format": "dsb2018", "root": str(discs_dsb)},
        "model": {
            "name": "unet",
            "encoder": "resnet18",
            "options": {"encoder_depth": 3, "decoder_channels": [32, 16, 8]},
        },
        "instance": {"method": "boundary", "crop": [48, 48]},
        "loss": {"name": "ce+dice", "class_weights": [1, 1, 2]},
        "train": {"epochs": 10, "batch_size": 2, "num_workers": 0, "lr": 0.01},
    }
    return train(config_from_dict(raw), tmp_path_factory.mktemp("instance_runs"))
