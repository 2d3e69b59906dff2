"""Run directories: the unit of record, never overwritten by a later run."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import yaml

from seglab.errors import SeglabError

log = logging.getLogger("seglab")


def new_run_dir(runs_dir: Path, name: str) -> Path:
    """Create ``runs_dir/name`` (or ``name-2``, ``name-3`` ... if taken) atomically."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    for i in range(1, 10000):
        p = runs_dir / (name if i == 1 else f"{name}-{i}")
        try:
            p.mkdir()
            return p
        except FileExistsError:
            continue
    raise SeglabError(f"{runs_dir}: too many runs named {name}; choose another name")


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; run files are ordinary readable files
    os.replace(tmp, path)


def write_json(path: Path, data) -> None:
    write_atomic(path, json.dumps(data, indent=2) + "\n")


def write_yaml(path: Path, data) -> None:
    write_atomic(path, yaml.safe_dump(data, sort_keys=False))


def add_file_log(path: Path) -> logging.Handler:
    """Send seglab's and Lightning's log records to ``path`` too."""
    h = logging.FileHandler(path)
    h.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in ("seglab", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:  # the run log records INFO even when used as a library
            logger.setLevel(logging.INFO)
        logger.addHandler(h)
    return h
