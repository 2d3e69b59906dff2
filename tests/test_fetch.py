"""``fetch`` against a loopback HTTP server (with Range support) serving archives built here."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import socket
import ssl
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import numpy as np
import pytest
import tifffile

from seglab.config import load_config
from seglab.data import fetch as fetch_mod
from seglab.data.dataset import DatasetDefinition, SegDataset
from seglab.data.fetch import REGISTRY, Source, fetch
from seglab.errors import SeglabError


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        srv = self.server
        rng = self.headers.get("Range")
        srv.requests.append((self.path, rng))
        if self.headers.get("If-Range") is not None:
            srv.if_ranges.append(self.headers.get("If-Range"))
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        etag = srv.etags.get(self.path)
        if_range = self.headers.get("If-Range")
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if if_range is not None and if_range != etag and not srv.ignore_if_range:  # changed
            m = None
        if m and srv.ranges:
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            body = data[start:]
        else:
            self.send_response(200)
            body = data
        self.send_header("Content-Length", str(len(body)))
        if etag:
            self.send_header("ETag", etag)
        if srv.last_modified:
            self.send_header("Last-Modified", srv.last_modified)
        self.end_headers()
        self.wfile.write(body[: srv.cut] if srv.cut else body)  # cut: hang up early

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.requests, srv.ranges, srv.etags = {}, [], True, {}
    srv.if_ranges, srv.cut, srv.ignore_if_range, srv.last_modified = [], None, False, None
    t = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    t.start()
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


def _png(arr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    return buf.tobytes()


def _camvid_zip(root: str, rng) -> tuple[bytes, dict[str, np.ndarray]]:
    arrays: dict[str, np.ndarray] = {}
    bio = io.BytesIO()
    with zipfile.ZipFile(bio, "w") as zf:
        zf.writestr(root.split("/")[0] + "/", b"")
        for split in ("train", "val", "test"):
            for k in range(2):
                img = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
                mask = rng.integers(0, 12, (12, 16), dtype=np.uint8)
                arrays[f"{split}/{k}"] = img
                arrays[f"{split}annot/{k}"] = mask
                zf.writestr(f"{root}/{split}/{k}.png", _png(img[..., ::-1]))
                zf.writestr(f"{root}/{split}annot/{k}.png", _png(mask))
    return bio.getvalue(), arrays


def _serve(srv, src: Source, data: bytes) -> None:
    srv.files[urlsplit(src.urls[0]).path] = data


def _patch(monkeypatch, name: str, **changes) -> Source:
    src = dataclasses.replace(REGISTRY[name], **changes)
    monkeypatch.setitem(REGISTRY, name, src)
    return src


def test_fetch_zip_verifies_extracts_and_writes_yaml(server, monkeypatch, tmp_path):
    root = REGISTRY["camvid"].root
    data, arrays = _camvid_zip(root, np.random.default_rng(0))
    src = _patch(monkeypatch, "camvid", sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    _serve(server, src, data)
    seen = []
    y = fetch("camvid", tmp_path, url_base=server.base, progress=lambda *a: seen.append(a))
    assert y == tmp_path / "camvid" / "dataset.yaml"
    assert ("download camvid", len(data), len(data)) in seen
    assert server.requests == [(urlsplit(src.urls[0]).path, None)]
    cfg = load_config(y)
    assert cfg.data.format == "camvid" and cfg.data.root == tmp_path / "camvid" / root
    d = DatasetDefinition.from_config(cfg.data)
    img, mask = SegDataset(d, "val", cache=False).load(1)
    assert np.array_equal(img, arrays["val/1"]) and np.array_equal(mask, arrays["valannot/1"])
    assert not (tmp_path / "camvid" / src.filename).exists()
    assert not list((tmp_path / "camvid").glob("*.part"))
    # a second call finds dataset.yaml and does not download again
    assert fetch("camvid", tmp_path, url_base=server.base) == y
    assert len(server.requests) == 1


def test_fetch_tar_gz_folder_layout_keeps_existing_files(server, monkeypatch, tmp_path):
    rng = np.random.default_rng(1)
    bio = io.BytesIO()
    masks = {}
    with tarfile.open(fileobj=bio, mode="w:gz") as tf:
        for stem in ("a", "b", "c"):
            mask = rng.integers(0, 3, (10, 10), dtype=np.uint8)
            masks[stem] = mask
            for sub, payload in (
                ("images", _png(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8))),
                ("masks", _png(mask)),
            ):
                info = tarfile.TarInfo(f"tiny/{sub}/{stem}.png")
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
        lst = b"a\nb\n"
        info = tarfile.TarInfo("tiny/train.txt")
        info.size = len(lst)
        tf.addfile(info, io.BytesIO(lst))
    data = bio.getvalue()
    src = Source(
        name="tiny",
        title="tiny test set",
        urls=("https://example.invalid/files/tiny.tar.gz",),
        filename="tiny.tar.gz",
        archive="tar.gz",
        format="folder",
        root="tiny",
        sha256=hashlib.sha256(data).hexdigest(),
        data={"classes": ["bg", "x", "y"]},
    )
    monkeypatch.setitem(REGISTRY, "tiny", src)
    _serve(server, src, data)
    existing = tmp_path / "tiny" / "tiny" / "masks" / "c.png"
    existing.parent.mkdir(parents=True)
    existing.write_bytes(b"mine")
    y = fetch("tiny", tmp_path, url_base=server.base, keep_archive=True)
    assert existing.read_bytes() == b"mine"
    assert (tmp_path / "tiny" / "tiny.tar.gz").read_bytes() == data
    d = DatasetDefinition.from_config(load_config(y).data)
    assert d.classes == ["bg", "x", "y"]
    ds = SegDataset(d, "train", cache=False)
    assert [it.image.stem for it in ds.pairs] == ["a", "b"]
    assert np.array_equal(ds.load(1)[1], masks["b"])


@pytest.mark.parametrize("ranges", [True, False])
def test_fetch_resumes_partial_download(server, monkeypatch, tmp_path, ranges):
    server.ranges = ranges
    data, _ = _camvid_zip(REGISTRY["camvid"].root, np.random.default_rng(2))
    src = _patch(monkeypatch, "camvid", sha256=hashlib.sha256(data).hexdigest())
    _serve(server, src, data)
    dest = tmp_path / "camvid"
    dest.mkdir()
    cut = len(data) // 3
    # with Range support only the tail is sent; garbage in the prefix would fail the checksum
    (dest / f"{src.filename}.part").write_bytes(data[:cut])
    y = fetch("camvid", tmp_path, url_base=server.base)
    assert server.requests == [(urlsplit(src.urls[0]).path, f"bytes={cut}-")]
    assert y.is_file() and not (dest / f"{src.filename}.part").exists()


def test_fetch_does_not_splice_a_part_onto_a_file_that_changed_upstream(
    server, monkeypatch, tmp_path
):
    """A part started under one ETag is resumed with If-Range; the server's file has changed
    since, so it sends the whole new file, which replaces the part instead of being appended."""
    old, _ = _camvid_zip(REGISTRY["camvid"].root, np.random.default_rng(7))
    new, _ = _camvid_zip(REGISTRY["camvid"].root, np.random.default_rng(8))
    src = _patch(
        monkeypatch, "camvid", sha256=None, md5=None, size=None
    )  # no checksum: nothing else would notice a splice
    _serve(server, src, old)
    path = urlsplit(src.urls[0]).path
    server.etags[path] = '"v1"'
    dest = tmp_path / "camvid"
    part = dest / f"{src.filename}.part"
    # an interrupted first download: the server sends a third of the file and hangs up
    server.cut = len(old) // 3
    with pytest.raises(SeglabError, match="cannot download camvid"):
        fetch("camvid", tmp_path, url_base=server.base)
    server.cut = None
    assert part.stat().st_size == len(old) // 3
    assert (dest / f"{src.filename}.part.validator").read_text().strip() == '"v1"'
    # upstream publishes a new version before the user fetches again
    server.files[path], server.etags[path] = new, '"v2"'
    server.requests.clear()
    y = fetch("camvid", tmp_path, url_base=server.base, keep_archive=True)
    assert server.requests == [(path, f"bytes={len(old) // 3}-")]
    assert (dest / src.filename).read_bytes() == new
    assert y.is_file() and not part.exists()
    assert not (dest / f"{src.filename}.part.validator").exists()


def test_fetch_resume_sends_the_parts_validator(server, monkeypatch, tmp_path):
    data, _ = _camvid_zip(REGISTRY["camvid"].root, np.random.default_rng(9))
    src = _patch(monkeypatch, "camvid", sha256=None, md5=None, size=None)
    _serve(server, src, data)
    path = urlsplit(src.urls[0]).path
    server.etags[path] = '"same"'
    dest = tmp_path / "camvid"
    dest.mkdir()
    cut = len(data) // 2
    (dest / f"{src.filename}.part").write_bytes(data[:cut])
    (dest / f"{src.filename}.part.validator").write_text('"same"\n')
    fetch("camvid", tmp_path, url_base=server.base, keep_archive=True)
    assert server.if_ranges == ['"same"']  # resumed: only the tail was sent
    assert (dest / src.filename).read_bytes() == data


def test_fetch_restarts_when_the_server_ignores_if_range(server, monkeypatch, tmp_path):
    """A server that answers 206 whatever If-Range says, with another ETag: the tail belongs
    to another file, so the part is dropped and the file fetched whole."""
    old, _ = _camvid_zip(REGISTRY["camvid"].root, np.random.default_rng(10))
    new, _ = _camvid_zip(REGISTRY["camvid"].root, np.random.default_rng(11))
    src = _patch(monkeypatch, "camvid", sha256=None, md5=None, size=None)
    _serve(server, src, new)
    path = urlsplit(src.urls[0]).path
    server.etags[path], server.ignore_if_range = '"v2"', True
    dest = tmp_path / "camvid"
    dest.mkdir()
    (dest / f"{src.filename}.part").write_bytes(old[: len(old) // 2])
    (dest / f"{src.filename}.part.validator").write_text('"v1"\n')
    fetch("camvid", tmp_path, url_base=server.base, keep_archive=True)
    assert (dest / src.filename).read_bytes() == new
    assert [r[1] for r in server.requests] == [f"bytes={len(old) // 2}-", None]


def test_fetch_sends_no_if_range_for_a_weak_etag(server, monkeypatch, tmp_path):
    data, _ = _camvid_zip(REGISTRY["camvid"].root, np.random.default_rng(12))
    src = _patch(monkeypatch, "camvid", sha256=None, md5=None, size=None)
    _serve(server, src, data)
    server.etags[urlsplit(src.urls[0]).path] = 'W/"weak"'
    server.last_modified = "Tue, 01 Dec 2026 00:00:00 GMT"  # not with a (weak) ETag either
    server.cut = len(data) // 4
    with pytest.raises(SeglabError, match="cannot download camvid"):
        fetch("camvid", tmp_path, url_base=server.base)
    server.cut = None
    assert not (tmp_path / "camvid" / f"{src.filename}.part.validator").exists()
    fetch("camvid", tmp_path, url_base=server.base)
    assert server.if_ranges == []  # RFC 9110: never a weak entity tag, nor then a date


def test_fetch_part_already_complete(server, monkeypatch, tmp_path):
    data, _ = _camvid_zip(REGISTRY["camvid"].root, np.random.default_rng(3))
    src = _patch(monkeypatch, "camvid", sha256=hashlib.sha256(data).hexdigest())
    _serve(server, src, data)
    (tmp_path / "camvid").mkdir()
    (tmp_path / "camvid" / f"{src.filename}.part").write_bytes(data)
    assert fetch("camvid", tmp_path, url_base=server.base).is_file()
    assert server.requests[0][1] == f"bytes={len(data)}-"


def test_fetch_wrong_checksum_deletes_download(server, monkeypatch, tmp_path):
    data, _ = _camvid_zip(REGISTRY["camvid"].root, np.random.default_rng(4))
    src = _patch(monkeypatch, "camvid", sha256="0" * 64)
    _serve(server, src, data)
    with pytest.raises(SeglabError) as err:
        fetch("camvid", tmp_path, url_base=server.base)
    msg = str(err.value)
    assert "sha256" in msg and "0" * 64 in msg and "deleted" in msg and "\n" not in msg
    assert [p for p in (tmp_path / "camvid").rglob("*") if p.is_file()] == []


def test_fetch_wrong_size_and_md5(server, monkeypatch, tmp_path):
    data, _ = _camvid_zip(REGISTRY["camvid"].root, np.random.default_rng(5))
    src = _patch(monkeypatch, "camvid", size=len(data) + 1)
    _serve(server, src, data)
    with pytest.raises(SeglabError, match=f"has {len(data)} bytes but {len(data) + 1}"):
        fetch("camvid", tmp_path, url_base=server.base)
    _patch(monkeypatch, "camvid", md5="f" * 32)
    with pytest.raises(SeglabError, match="md5"):
        fetch("camvid", tmp_path, url_base=server.base)
    assert not list((tmp_path / "camvid").iterdir())


def test_fetch_unreachable_host_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "*")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    with pytest.raises(SeglabError) as err:
        fetch("voc2012", tmp_path, url_base=base)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(
        f"cannot download voc2012 from {base}/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar ("
    )
    assert f"download it by hand into {tmp_path / 'voc2012'}" in msg
    assert msg.endswith("or check the network")


def test_fetch_http_error_and_unknown_name(server, tmp_path):
    with pytest.raises(SeglabError, match=r"cannot download ade20k from .*\(HTTP 404 Not Found\)"):
        fetch("ade20k", tmp_path, url_base=server.base)
    with pytest.raises(SeglabError, match="unknown data set 'nope'; available: camvid"):
        fetch("nope", tmp_path)


def test_fetch_corrupt_zip_member_is_a_one_line_error(tmp_path, monkeypatch):
    """Deflated member data that does not decompress (zlib.error): the error names the
    archive and the fix; no partial member file is left."""
    root = "kaggle-dsbowl-2018-dataset-fixes-master/stage1_train"
    bio = io.BytesIO()
    with zipfile.ZipFile(bio, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{root}/a.txt", b"nuclei " * 1000)
    data = bytearray(bio.getvalue())
    info = zipfile.ZipFile(io.BytesIO(bytes(data))).infolist()[0]
    start = info.header_offset + 30 + len(info.filename.encode())  # member data
    data[start : start + 20] = b"\xff" * 20
    src = _patch(monkeypatch, "dsb2018", sha256=None, size=None)
    archive = tmp_path / "dsb2018" / src.filename
    archive.parent.mkdir()
    archive.write_bytes(bytes(data))
    with pytest.raises(SeglabError) as err:
        fetch("dsb2018", tmp_path, url_base="http://127.0.0.1:9")
    msg = str(err.value)
    assert msg.startswith(f"{archive} is not a readable zip archive (")
    assert msg.endswith("delete it and run the fetch again") and "\n" not in msg
    assert archive.is_file() and not list((tmp_path / "dsb2018").rglob("*seglab-part"))


def test_fetch_ssl_error_while_reading_tries_the_next_mirror(tmp_path, monkeypatch):
    """An SSLError during the download read is an OSError, but of the network, not the disk."""
    tried = []

    def broken(url, part, label, progress):
        tried.append(url)
        raise ssl.SSLError(1, "[SSL: DECRYPTION_FAILED_OR_BAD_RECORD_MAC] bad record mac")

    monkeypatch.setattr(fetch_mod, "_download", broken)
    msg = r"cannot download voc2012 from .*\(\[SSL: .*bad record mac\); download it by hand"
    with pytest.raises(SeglabError, match=msg):
        fetch("voc2012", tmp_path, url_base="http://127.0.0.1:9")
    assert len(tried) == 2  # both mirrors


def test_fetch_rejects_path_traversal(server, monkeypatch, tmp_path):
    bio = io.BytesIO()
    with zipfile.ZipFile(bio, "w") as zf:
        zf.writestr("ok/a.txt", b"a")
        zf.writestr("../evil.txt", b"evil")
    src = _patch(monkeypatch, "dsb2018", sha256=None, size=None)
    _serve(server, src, bio.getvalue())
    with pytest.raises(SeglabError, match="unsafe path '../evil.txt'"):
        fetch("dsb2018", tmp_path / "data", url_base=server.base)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "data" / "evil.txt").exists()
    assert not (tmp_path / "data" / "dsb2018" / "ok").exists()  # zip members checked first


def test_fetch_isbi2012_converts_tiff_stacks(server, monkeypatch, tmp_path):
    rng = np.random.default_rng(6)
    vol = rng.integers(0, 256, (3, 16, 16), dtype=np.uint8)
    lab = np.where(rng.random((3, 16, 16)) > 0.3, 255, 0).astype(np.uint8)
    test = rng.integers(0, 256, (2, 16, 16), dtype=np.uint8)
    bio = io.BytesIO()
    with zipfile.ZipFile(bio, "w") as zf:
        for name, arr in (("train-volume", vol), ("train-labels", lab), ("test-volume", test)):
            buf = io.BytesIO()
            tifffile.imwrite(buf, arr)
            zf.writestr(f"ISBI-2012-challenge/{name}.tif", buf.getvalue())
    src = _patch(monkeypatch, "isbi2012")
    _serve(server, src, bio.getvalue())
    y = fetch("isbi2012", tmp_path, url_base=server.base)
    root = load_config(y).data.root
    assert root == tmp_path / "isbi2012"
    for i in range(3):
        assert np.array_equal(cv2.imread(str(root / f"train/images/{i:02d}.png"), 0), vol[i])
        m = cv2.imread(str(root / f"train/masks/{i:02d}.png"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(m, (lab[i] == 255).astype(np.uint8))
    assert sorted(p.name for p in (root / "test/images").iterdir()) == ["00.png", "01.png"]


def test_registry_entries_are_complete():
    for name, src in REGISTRY.items():
        assert src.name == name and src.urls and src.filename and src.root
        assert src.archive in ("zip", "tar", "tar.gz")
        assert src.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", src.sha256)
        assert all(u.startswith(("http://", "https://")) for u in src.urls)
    assert fetch_mod._with_base("http://a.org/x/y.tar?z=1", "http://127.0.0.1:9/m/") == (
        "http://127.0.0.1:9/m/x/y.tar?z=1"
    )


def test_fetch_uses_archive_placed_by_hand(tmp_path, monkeypatch):
    data, _ = _camvid_zip(REGISTRY["camvid"].root, np.random.default_rng(7))
    src = _patch(monkeypatch, "camvid", sha256=hashlib.sha256(data).hexdigest())
    (tmp_path / "camvid").mkdir()
    (tmp_path / "camvid" / src.filename).write_bytes(data)
    # an interrupted download from before, which the hand-placed archive replaces
    (tmp_path / "camvid" / f"{src.filename}.part").write_bytes(data[:100])
    (tmp_path / "camvid" / f"{src.filename}.part.validator").write_text('"x"\n')
    # no server at all: the archive is used as is
    y = fetch("camvid", tmp_path, url_base="http://127.0.0.1:9")
    assert DatasetDefinition.from_config(load_config(y).data).num_classes == 11
    assert Path(y).is_file()
    assert not list((tmp_path / "camvid").glob("*.part*"))  # the stale part is gone
