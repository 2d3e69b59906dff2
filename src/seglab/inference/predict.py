"""``predict()``: masks (index PNG, the input's size) and colour overlays for files or folders."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from seglab.data.io import IMAGE_SUFFIXES
from seglab.errors import SeglabError
from seglab.inference.predictor import Predictor, overlay


def image_files(folder: Path, skip: Path | None = None) -> list[Path]:
    """The image files under ``folder`` (recursively, sorted), none from under ``skip``."""
    return sorted(
        f
        for f in folder.rglob("*")
        if f.suffix.lower() in IMAGE_SUFFIXES
        and f.is_file()
        and not (skip and f.resolve().is_relative_to(skip))
    )


OUTPUT_SUFFIXES = ("_mask.png", "_overlay.png", "_instances.png")


def expand_inputs(inputs: list[Path], out: Path | None = None) -> list[Path]:
    """Files as given; folders -> their image files (recursively, sorted), except an
    earlier run's outputs: those under the output folder ``out`` when it lies inside the
    input folder, and ``*_mask.png``, ``*_overlay.png``, ``*_instances.png`` directly in
    it when ``out`` is the input folder."""
    files: list[Path] = []
    o = out.resolve() if out is not None else None
    for p in inputs:
        if p.is_dir():
            inside = o is not None and o != p.resolve() and o.is_relative_to(p.resolve())
            found = image_files(p, o if inside else None)
            if o == p.resolve():
                found = [f for f in found if f.parent != p or not f.name.endswith(OUTPUT_SUFFIXES)]
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise SeglabError(f"input {p} does not exist; pass image files or folders")
    if not files:
        raise SeglabError(
            f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {', '.join(map(str, inputs))}"
        )
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems:
            raise SeglabError(
                f"{f} and {stems[f.stem]} would both write {f.stem}_mask.png; "
                "predict them into different --out folders"
            )
        stems[f.stem] = f
    return files


def write_png(path: Path, array: np.ndarray) -> None:
    """Write a PNG through a temporary file (RGB arrays are converted for OpenCV)."""
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    if not cv2.imwrite(str(tmp), array):
        raise SeglabError(f"cannot write {path}; check that the folder is writable")
    os.replace(tmp, path)


def predict(
    predictor: Predictor, inputs: list[Path], out: Path, alpha: float = 0.5, progress=None
) -> list[Path]:
    """Predict every image; returns the mask paths. Unreadable images are skipped and
    reported together at the end (an error), after every readable one was written."""
    files = expand_inputs(inputs, out)
    out.mkdir(parents=True, exist_ok=True)
    written, failed = [], []
    colors = predictor.meta["colors"]
    for f in progress(files) if progress else files:
        try:
            image, mask = predictor.predict_file(f)
        except SeglabError as err:
            failed.append(str(err))
            continue
        write_png(out / f"{f.stem}_mask.png", mask)
        write_png(out / f"{f.stem}_overlay.png", overlay(image, mask, colors, alpha))
        written.append(out / f"{f.stem}_mask.png")
    if failed:
        raise SeglabError(
            f"predicted {len(written)} of {len(files)} images into {out}; "
            f"{len(failed)} failed, first: {failed[0]}"
        )
    return written
