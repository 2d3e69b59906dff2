"""The HTTP service: every error case answers JSON with the right status, a full queue
answers 503 with Retry-After (deterministically, with a predictor that waits for a signal),
the served mask equals what ``seglab predict`` writes, and a schemathesis run against the
OpenAPI schema finds no server error."""

from __future__ import annotations

import asyncio
import io
import struct
import threading
import time
import zlib

import cv2
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from seglab.data.io import adapt_channels
from seglab.serve import create_app, model_name
from tests.conftest import run_cli


class FakeBackend:
    name = "fake"
    precision = "fp32"


class FakePredictor:
    """Pixels brighter than 127 in the first channel are class 1; ``gate`` blocks predict."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.meta = {
            "classes": ["background", "bright"],
            "colors": [[0, 0, 0], [250, 20, 20]],
            "in_channels": 3,
            "ignore_index": 255,
        }
        self.backend = FakeBackend()
        self.flips, self.scales, self.scale = (), (1.0,), 1.0
        self.gate = gate
        self.calls = 0

    def adapt(self, image, path="<image>"):
        return adapt_channels(image, 3, path)

    def predict(self, image, path="<image>"):
        self.calls += 1
        if self.gate is not None:
            assert self.gate.wait(30), "test never released the predictor"
        return (image[:, :, 0] > 127).astype(np.uint8)


def png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


def test_image(h: int = 24, w: int = 32) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[:, w // 2 :] = 200
    return img


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` (a decompression bomb's first bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


@pytest.fixture()
def client():
    app = create_app({"fake": FakePredictor()}, max_upload_bytes=20_000, max_pixels=100_000)
    with TestClient(app) as c:
        yield c


def post(client, data: bytes, name="x.png", ctype="image/png", **fields):
    return client.post("/v1/segment", files={"file": (name, data, ctype)}, data=fields)


# -- happy paths --------------------------------------------------------------------------------
def test_models_health_and_metrics(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["models"] == ["fake"]
    models = client.get("/v1/models").json()
    assert models["default"] == "fake"
    (m,) = models["models"]
    assert m["kind"] == "semantic" and m["backend"] == "fake"
    assert [c["name"] for c in m["classes"]] == ["background", "bright"]
    assert m["classes"][1]["color"] == [250, 20, 20]
    assert m["input"]["max_upload_bytes"] == 20_000 and m["input"]["max_pixels"] == 100_000
    assert "image/png" in m["input"]["accepted_types"]
    assert post(client, png(test_image())).status_code == 200
    text = client.get("/metrics").text
    assert 'seglab_http_requests_total{method="POST",path="/v1/segment",status="200"} 1.0' in text
    assert 'seglab_http_request_duration_seconds_bucket{le="0.5",path="/v1/segment"}' in text
    assert "seglab_inference_batch_size_count 1.0" in text
    assert "seglab_queue_depth 0.0" in text
    page = client.get("/")
    assert page.status_code == 200 and "seglab" in page.text
    assert client.get("/static/app.js").status_code == 200


def test_unknown_methods_share_one_metrics_label(client):
    for method in ("FOO", "BAR"):
        assert client.request(method, "/healthz").status_code == 405
    text = client.get("/metrics").text
    assert 'seglab_http_requests_total{method="other",path="/healthz",status="405"} 2.0' in text
    assert "FOO" not in text and "BAR" not in text


def test_png_and_json_results(client):
    img = test_image()
    r = post(client, png(img))
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["x-seglab-model"] == "fake"
    mask = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_UNCHANGED)
    assert mask.dtype == np.uint8 and mask.shape == (24, 32)
    np.testing.assert_array_equal(mask, (img[:, :, 0] > 127).astype(np.uint8))

    body = post(client, png(img), format="json").json()
    assert (body["width"], body["height"], body["kind"]) == (32, 24, "semantic")
    assert body["instances"] is None
    bg, bright = body["classes"]
    assert bg["pixels"] == bright["pixels"] == 24 * 16 and bright["fraction"] == 0.5
    from pycocotools import mask as mask_utils

    rle = {"size": bright["rle"]["size"], "counts": bright["rle"]["counts"].encode()}
    np.testing.assert_array_equal(mask_utils.decode(rle), mask == 1)


def test_type_is_checked_by_content_not_name(client):
    assert post(client, png(test_image()), name="notes.txt", ctype="text/plain").status_code == 200
    ok, jpg = cv2.imencode(".jpg", test_image())
    assert post(client, jpg.tobytes(), name="x.png").status_code == 200


# -- every error case ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "fields", "status", "code"),
    [
        (b"", {}, 400, "empty"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 100, {}, 400, "undecodable"),  # truncated PNG
        (b"GIF89a" + b"\1" * 50, {}, 400, "undecodable"),
        (b"hello, this is text", {}, 415, "unsupported_type"),
        (b"%PDF-1.7\n" + b"x" * 100, {}, 415, "unsupported_type"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 19_000 + b"x" * 2000, {}, 413, "too_large"),
        (png_header_only(400, 400), {}, 413, "too_many_pixels"),  # > 100,000 pixels
        (png_header_only(60_000, 60_000), {}, 413, "too_many_pixels"),  # Pillow's bomb limit
        ("ok", {"model": "nope"}, 422, "unknown_model"),
        ("ok", {"tta": "spin"}, 422, "invalid_tta"),
        ("ok", {"tta": "9"}, 422, "invalid_tta"),
        ("ok", {"tta": "d4,0.5,2"}, 422, "invalid_tta"),  # 24 network passes per image
        ("ok", {"format": "gif"}, 422, "invalid_request"),
    ],
)
def test_errors_are_json_with_the_right_status(client, data, fields, status, code):
    data = png(test_image()) if data == "ok" else data
    r = post(client, data, **fields)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == code and body["error"]
    assert "\n" not in body["error"]


def test_error_cases_without_a_file(client, tmp_path):
    r = client.post("/v1/segment", data={"model": "fake"})
    assert r.status_code == 422 and r.json()["code"] == "invalid_request"
    assert "file" in r.json()["error"]
    r = client.post("/v1/segment", content=b"{}", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["code"] == "invalid_request"
    # a request body far above the limit is refused from its Content-Length, unread
    r = post(client, b"\x89PNG\r\n\x1a\n" + b"\0" * 200_000)
    assert r.status_code == 413 and r.json()["code"] == "too_large"

    # ... and, without a Content-Length (chunked), once it has read past the limit
    def chunks():
        yield b"--b\r\nContent-Disposition: form-data; name=file; filename=x.png\r\n\r\n"
        for _ in range(20):
            yield b"\x89PNG" + b"\0" * 10_000

    r = client.post(
        "/v1/segment",
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert r.status_code == 413 and r.json()["code"] == "too_large", r.text
    r = client.get("/v2/nothing")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    # a 5-channel TIFF for a 3-channel model: readable, but the model cannot take it
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, np.zeros((5, 16, 16), np.uint8))
    r = post(client, buf.getvalue(), name="x.tif", ctype="image/tiff")
    assert r.status_code == 422 and r.json()["code"] == "wrong_channels", r.text


def tiff(array: np.ndarray, **kw) -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, array, compression="zlib", **kw)
    return buf.getvalue()


def test_multi_page_tiff_counts_every_page_before_decoding(client, monkeypatch):
    """Pages are read as channels, so 12 pages of 100x100 are 120,000 pixels (> 100,000),
    though the first page's header says 10,000; refused before any pixel is decoded."""
    import seglab.serve.images as images

    def no_decoding(path):
        raise AssertionError("decoded")

    monkeypatch.setattr(images, "read_image", no_decoding)
    r = post(client, tiff(np.zeros((12, 100, 100), np.uint8)), name="x.tif", ctype="image/tiff")
    assert r.status_code == 413 and r.json()["code"] == "too_many_pixels", r.text
    assert "(12, 100, 100)" in r.json()["error"]
    monkeypatch.undo()
    # an RGB TIFF's colour samples are one pixel: 300x300 RGB is within the limit
    rgb = tiff(np.zeros((300, 300, 3), np.uint8), photometric="rgb")
    assert post(client, rgb, name="x.tif", ctype="image/tiff").status_code == 200


def test_full_queue_answers_503_with_retry_after():
    """One image runs (blocked), one waits (max_queue=1): the third is refused at once."""
    gate = threading.Event()
    fake = FakePredictor(gate)
    app = create_app({"fake": fake}, max_queue=1)
    queue = app.state.queue
    files = {"file": ("x.png", png(test_image()), "image/png")}

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            first = asyncio.create_task(c.post("/v1/segment", files=files))
            while queue.busy != 1:  # the worker has taken the first image
                await asyncio.sleep(0.01)
            second = asyncio.create_task(c.post("/v1/segment", files=files))
            while queue.depth != 1:
                await asyncio.sleep(0.01)
            third = await c.post("/v1/segment", files=files)
            gate.set()
            return await first, await second, third, await c.get("/metrics")

    try:
        first, second, third, metrics = asyncio.run(asyncio.wait_for(scenario(), 30))
    finally:
        gate.set()
        queue.stop()
    assert third.status_code == 503 and third.json()["code"] == "queue_full"
    assert int(third.headers["retry-after"]) >= 1
    assert first.status_code == second.status_code == 200
    assert fake.calls == 2
    assert "seglab_queue_rejected_total 1.0" in metrics.text


def test_queue_batches_same_sized_images():
    from seglab.serve.queue import InferenceQueue

    seen = []

    def run(key, payloads):
        seen.append(len(payloads))
        time.sleep(0.05)
        return [p * 2 for p in payloads]

    q = InferenceQueue(run, max_queue=8, max_batch=4)

    async def scenario():
        return await asyncio.gather(*(q.submit("same", i) for i in range(5)))

    try:
        assert asyncio.run(scenario()) == [0, 2, 4, 6, 8]
    finally:
        q.stop()
    assert sum(seen) == 5 and max(seen) > 1


# -- the served mask is what `seglab predict` writes --------------------------------------------
def test_served_mask_equals_seglab_predict(trained_run, synth_root, tmp_path):
    from seglab.inference.predict import predict
    from seglab.inference.predictor import Predictor

    image = sorted((synth_root / "images").glob("*.png"))[0]
    predictor = Predictor.open(trained_run)
    (written,) = predict(predictor, [image], tmp_path / "pred")
    expected = cv2.imread(str(written), cv2.IMREAD_UNCHANGED)
    app = create_app({model_name(trained_run): predictor})
    with TestClient(app) as c:
        r = c.post("/v1/segment", files={"file": ("a.bin", image.read_bytes(), "x/y")})
        body = c.post(
            "/v1/segment", files={"file": ("a.png", image.read_bytes())}, data={"format": "json"}
        ).json()
        flipped = c.post(
            "/v1/segment", files={"file": ("a.png", image.read_bytes())}, data={"tta": "hflip"}
        )
    assert r.status_code == 200, r.text
    served = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_UNCHANGED)
    assert served.dtype == np.uint8 and served.shape == expected.shape
    np.testing.assert_array_equal(served, expected)
    counts = np.bincount(expected.ravel(), minlength=len(body["classes"]))
    assert [c["pixels"] for c in body["classes"]] == counts.tolist()
    assert flipped.status_code == 200 and r.headers["x-seglab-backend"] == predictor.backend.name


def test_serve_cli_errors_are_one_line(tmp_path):
    r = run_cli("serve", tmp_path / "missing-run", "--port", "8123")
    assert r.returncode == 1
    assert "neither a run directory nor a checkpoint" in r.stderr
    assert "Traceback" not in r.stderr


def test_model_names(tmp_path):
    (tmp_path / "run-a" / "checkpoints").mkdir(parents=True)
    ckpt = tmp_path / "run-a" / "checkpoints" / "best.ckpt"
    ckpt.write_bytes(b"")
    assert model_name(tmp_path / "run-a") == "run-a"
    assert model_name(ckpt) == "run-a"
    (tmp_path / "run-a" / "export-openvino").mkdir()
    assert model_name(tmp_path / "run-a" / "export-openvino") == "run-a-openvino"


# -- schemathesis against the OpenAPI schema ----------------------------------------------------
import schemathesis  # noqa: E402 - a pinned dev dependency: fail loudly when missing
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

_fuzz_app = create_app({"fake": FakePredictor()}, max_upload_bytes=50_000, max_pixels=250_000)
schema = schemathesis.openapi.from_asgi("/openapi.json", _fuzz_app)


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_openapi_schema_fuzz_no_server_errors(case):
    case.call_and_validate(
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
            response_headers_conformance,
        ]
    )


def test_openapi_schema_is_valid():
    """The schema validates against the OpenAPI 3.1 meta-schema (schemathesis ships it)."""
    from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

    spec = TestClient(_fuzz_app).get("/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
    assert [e.message for e in OPENAPI_31_VALIDATOR.iter_errors(spec)] == []
    assert set(spec["paths"]) == {"/healthz", "/metrics", "/v1/models", "/v1/segment"}


def test_batched_forward_pass_agrees_with_single_images(trained_run, synth_root):
    """``--max-batch``: same-sized images in one pass give the masks of one-by-one passes
    (bit-identical on this machine; float reductions may differ by batch, so allow 0.1%)."""
    from seglab.data.io import read_image
    from seglab.inference.predictor import Predictor
    from seglab.serve.app import run_batch

    predictor = Predictor.open(trained_run)
    images = [read_image(p) for p in sorted((synth_root / "images").glob("*.png"))[:4]]
    batched = run_batch((predictor, None, None), images)
    for image, mask in zip(images, batched, strict=True):
        assert (predictor.predict(image) == mask).mean() >= 0.999


# -- instance models ----------------------------------------------------------------------------
def test_instance_model_serves_what_seglab_predict_writes(instance_run, discs_dsb, tmp_path):
    """A ``task: instance`` run: format=png is the 16-bit id map ``seglab predict`` writes;
    format=json lists each object (class, score, box, area, RLE) consistently with it."""
    from pycocotools import mask as mask_utils

    from seglab.instance.run import predict_instance
    from seglab.serve import open_models

    image = discs_dsb / "images" / "im6.png"
    (written,) = predict_instance(instance_run, [image], tmp_path / "pred")
    expected = cv2.imread(str(written), cv2.IMREAD_UNCHANGED)
    n = int(expected.max())
    assert n >= 2, "the tiny instance model found fewer than 2 objects; the test needs some"
    app = create_app(open_models([str(instance_run)]))
    with TestClient(app) as c:
        info = c.get("/v1/models").json()["models"][0]
        r = post(c, image.read_bytes())
        body = post(c, image.read_bytes(), format="json").json()
        no_tta = post(c, image.read_bytes(), tta="none")
        tta = post(c, image.read_bytes(), tta="hflip")
    assert info["kind"] == "instance" and info["classes"][1]["name"] == "nucleus"
    assert r.status_code == 200 and r.headers["x-seglab-kind"] == "instance"
    served = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_UNCHANGED)
    assert served.dtype == np.uint16
    np.testing.assert_array_equal(served, expected)
    assert no_tta.content == r.content
    assert tta.status_code == 422 and tta.json()["code"] == "invalid_tta"

    assert body["kind"] == "instance" and [o["id"] for o in body["instances"]] == list(
        range(1, n + 1)
    )
    for o in body["instances"]:
        m = mask_utils.decode({"size": o["rle"]["size"], "counts": o["rle"]["counts"]})
        np.testing.assert_array_equal(m.astype(bool), expected == o["id"])
        ys, xs = np.nonzero(expected == o["id"])
        assert o["box"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert o["area"] == len(ys) and 0 <= o["score"] <= 1
        assert (o["class_index"], o["class_name"]) == (1, "nucleus")
    pixels = {c["name"]: c["pixels"] for c in body["classes"]}
    fg = int((expected > 0).sum())
    assert pixels == {"background": expected.size - fg, "nucleus": fg}


def test_instance_model_on_an_exported_backend_is_refused_in_one_line(instance_run):
    from seglab.errors import SeglabError
    from seglab.serve import open_models

    with pytest.raises(SeglabError, match="instance model, which runs on torch only"):
        open_models([str(instance_run)], backend="openvino")
