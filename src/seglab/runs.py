"""Run directories: the unit of record, never overwritten by a later run."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from logging.handlers import BufferingHandler
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


_LOGGERS = ("seglab", "lightning.pytorch", "lightning.fabric")


@contextmanager
def _attached(h: logging.Handler) -> Iterator[logging.Handler]:
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:  # the run log records INFO even when used as a library
            logger.setLevel(logging.INFO)
        logger.addHandler(h)
    try:
        yield h
    finally:
        for name in _LOGGERS:
            logging.getLogger(name).removeHandler(h)
        h.close()


@contextmanager
def held_log() -> Iterator[list[logging.LogRecord]]:
    """Keep the log records of the block for a run log that is opened after it (``file_log``'s
    ``earlier``): work that can still fail with a bad setting runs before the run directory
    exists, and what it logged still reaches the run's log."""
    records: list[logging.LogRecord] = []
    with _attached(BufferingHandler(capacity=1 << 20)) as h:
        try:
            yield records
        finally:
            records.extend(h.buffer)  # closing the handler clears its buffer


@contextmanager
def file_log(path: Path | None, earlier: Sequence[logging.LogRecord] = ()) -> Iterator[None]:
    """Send seglab's and Lightning's log records to ``path`` too while the block runs, after
    the ``earlier`` ones (``path`` None: no file, e.g. on DDP ranks other than 0)."""
    if path is None:
        yield
        return
    h = logging.FileHandler(path)
    h.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for record in earlier:
        h.handle(record)
    with _attached(h):
        yield
