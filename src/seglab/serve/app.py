"""The HTTP service: ``create_app(models)`` -> a FastAPI app with the segmentation API, the
metrics and health endpoints, and the web page at ``/``.

Endpoints: ``POST /v1/segment`` (multipart ``file`` + optional ``model``, ``tta``,
``format=png|json``), ``GET /v1/models``, ``GET /healthz``, ``GET /metrics`` (Prometheus
text), ``GET /openapi.json``, ``GET /docs``. Every error is JSON ``{"error", "code"}`` with
400 (undecodable image), 413 (too many bytes or pixels), 415 (not an accepted image type, by
content), 422 (invalid field, unknown model, bad TTA, wrong channel count) or 503 with
``Retry-After`` (inference queue full).

Semantic models answer with a class-index mask (8-bit PNG) or per-class areas; instance models
(``task: instance`` runs) with a 16-bit instance-id PNG (0 = background, as ``seglab predict``
writes it) or per-class areas plus one entry per object: id, class, score, box and RLE.
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Hashable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from seglab.errors import SeglabError, one_line
from seglab.instance.metrics import encode, object_rles
from seglab.serve.images import ACCEPTED, UploadError, decode_upload
from seglab.serve.queue import InferenceQueue, QueueFull

STATIC = Path(__file__).parent / "static"
MiB = 1 << 20
TTA_OFF = ("", "none", "off")
#: network passes per image a request's tta may ask for (views x scales; d4 alone is 8)
MAX_TTA_PASSES = 16


# -- response bodies (the OpenAPI schema is generated from these) ---------------------------
class ErrorBody(BaseModel):
    error: str = Field(description="what went wrong and how to fix it, one line")
    code: str = Field(description="machine-readable reason, e.g. too_large, unsupported_type")
    detail: list[dict[str, Any]] | None = Field(None, description="field errors (422 only)")


class ClassInfo(BaseModel):
    index: int
    name: str
    color: list[int] = Field(description="RGB, 0..255")


class InputPolicy(BaseModel):
    accepted_types: list[str] = Field(description="media types, checked by content")
    max_upload_bytes: int
    max_pixels: int = Field(description="width x height above which an upload is refused")
    in_channels: int = Field(description="grey and RGBA inputs are converted to this")
    scale: float = Field(description="images are resized by this factor before the network")
    tiled_above_pixels: int | None = Field(
        None, description="larger images run as overlapping tiles"
    )
    tta: str | None = Field(None, description="the model's default test-time augmentation")


Kind = Literal["semantic", "instance"]


class ModelInfo(BaseModel):
    name: str
    kind: Kind = Field(
        "semantic",
        description="semantic: one class per pixel; instance: separate objects (ids)",
    )
    backend: str
    precision: str
    classes: list[ClassInfo]
    ignore_index: int | None = None
    input: InputPolicy


class ModelList(BaseModel):
    default: str
    models: list[ModelInfo]


class Health(BaseModel):
    status: Literal["ok"]
    models: list[str]
    queue_depth: int
    queue_capacity: int


class RLE(BaseModel):
    size: list[int] = Field(description="[height, width]")
    counts: str = Field(description="COCO compressed RLE (column-major), as pycocotools writes")


class ClassArea(BaseModel):
    index: int
    name: str
    color: list[int]
    pixels: int
    fraction: float = Field(description="share of the image's pixels, 0..1")
    rle: RLE | None = Field(None, description="the class's pixels; null when it has none")


class InstanceInfo(BaseModel):
    id: int = Field(description="the object's value in the format=png instance map")
    class_index: int
    class_name: str
    score: float = Field(description="the model's confidence, 0..1")
    box: list[int] = Field(description="[x, y, width, height] of its pixels (COCO bbox)")
    area: int = Field(description="pixels")
    rle: RLE


class SegmentResult(BaseModel):
    model: str
    kind: Kind = "semantic"
    width: int
    height: int
    tta: str | None
    classes: list[ClassArea] = Field(description="every class, with its area")
    instances: list[InstanceInfo] | None = Field(
        None, description="instance models: one entry per object; null for semantic models"
    )
    server_ms: float = Field(description="time from queueing the image to its mask, ms")


ERRORS = {
    400: {"model": ErrorBody, "description": "the image cannot be decoded"},
    413: {"model": ErrorBody, "description": "upload or pixel count above the limit"},
    415: {"model": ErrorBody, "description": "not an accepted image type (by content)"},
    422: {"model": ErrorBody, "description": "invalid field, model, TTA or channel count"},
    503: {
        "model": ErrorBody,
        "description": "inference queue full; retry after the Retry-After seconds",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    },
}


def error(status: int, code: str, message: str, **extra) -> JSONResponse:
    headers = extra.pop("headers", None)
    body = {"error": message, "code": code, **extra}
    return JSONResponse(body, status_code=status, headers=headers)


class BodyTooLarge(Exception):
    """The request body grew past the limit while it was being read."""


class BodyLimit:
    """ASGI middleware: stop reading a ``path`` request body past ``limit`` bytes, also when
    the client sent no Content-Length (chunked). FastAPI reports the failed body parse as an
    HTTPException caused by :class:`BodyTooLarge`, which the app answers with 413."""

    def __init__(self, app, path: str, limit: int) -> None:
        self.app, self.path, self.limit = app, path, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != self.path:
            return await self.app(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(f"request body above {self.limit} bytes")
            return message

        await self.app(scope, limited, send)


# -- helpers ----------------------------------------------------------------------------------
def areas(mask: np.ndarray, classes: Sequence[str], colors: Sequence, with_rle: bool) -> list:
    counts = np.bincount(mask.ravel(), minlength=len(classes))
    total = max(1, mask.size)
    out = []
    for k, name in enumerate(classes):
        n = int(counts[k])
        out.append(
            {
                "index": k,
                "name": str(name),
                "color": [int(c) for c in colors[k]],
                "pixels": n,
                "fraction": n / total,
                "rle": encode(mask == k) if with_rle and n else None,
            }
        )
    return out


def instance_objects(
    inst: np.ndarray, objects: Sequence[tuple[int, float]], classes: Sequence[str]
) -> tuple[np.ndarray, list[dict]]:
    """An instance map (ids 1..N) and (class index, score) per id -> (class-index map, one
    dict per object: id, class, score, COCO box, area, RLE)."""
    lut = np.zeros(len(objects) + 1, np.uint8)
    lut[1:] = [label for label, _ in objects]
    area = np.bincount(inst.ravel(), minlength=len(objects) + 1)
    out = []
    for i, ((ys, xs), rle) in enumerate(object_rles(inst), start=1):
        label, score = objects[i - 1]
        out.append(
            {
                "id": i,
                "class_index": int(label),
                "class_name": str(classes[label]),
                "score": round(float(score), 5),
                "box": [xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start],
                "area": int(area[i]),
                "rle": rle,
            }
        )
    return lut[inst], out


def encode_png(mask: np.ndarray) -> bytes:
    """Index PNG (8-bit classes or 16-bit instance ids), encoded as ``seglab predict`` writes
    it (OpenCV)."""
    ok, buf = cv2.imencode(".png", mask)
    if not ok:  # pragma: no cover - OpenCV encodes any uint8/uint16 array
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def _backend_info(predictor) -> tuple[str, str]:
    backend = getattr(predictor, "backend", None)
    return str(getattr(backend, "name", "unknown")), str(getattr(backend, "precision", "unknown"))


def _kind(predictor) -> str:
    return getattr(predictor, "kind", "semantic")


def _tta_text(predictor) -> str | None:
    flips = list(getattr(predictor, "flips", ()) or ())
    scales = [str(s) for s in (getattr(predictor, "scales", ()) or ()) if s != 1.0]
    return ",".join(flips + scales) or None


class Models:
    """The served predictors and their TTA variants (built once, shared backend)."""

    def __init__(self, models: dict) -> None:
        if not models:
            raise SeglabError("no models to serve; pass at least one run or exported model")
        self.base = dict(models)
        self.default = next(iter(self.base))
        self._variants: dict[tuple[str, str], Any] = {}

    def get(self, name: str | None, tta: str | None):
        """(predictor, tta spec used); raises UploadError 422 for a bad name or TTA."""
        name = name or self.default
        if name not in self.base:
            raise UploadError(
                422,
                "unknown_model",
                f"unknown model {name!r}; choose one of {', '.join(self.base)} (GET /v1/models)",
            )
        base = self.base[name]
        if tta is None:
            return name, base
        spec = tta.strip().lower()
        if _kind(base) == "instance":
            if spec in TTA_OFF:
                return name, base
            raise UploadError(
                422,
                "invalid_tta",
                f"{name} is an instance model: it takes no test-time augmentation; leave tta out",
            )
        key = (name, spec)
        if key not in self._variants:
            from seglab.inference.predictor import parse_tta, tta_passes

            try:
                flips, scales = parse_tta("" if spec in TTA_OFF else spec)
            except SeglabError as err:
                raise UploadError(422, "invalid_tta", one_line(err)) from None
            passes = tta_passes(flips, scales)
            if passes > MAX_TTA_PASSES:  # each such request would hold the worker long
                raise UploadError(
                    422,
                    "invalid_tta",
                    f"tta {tta!r} runs the network {passes} times per image; the service "
                    f"allows at most {MAX_TTA_PASSES} (e.g. d4 with one extra scale)",
                )
            variant = copy.copy(base)
            variant.flips, variant.scales = flips, scales
            if len(self._variants) < 64:  # bounded: specs are user input
                self._variants[key] = variant
            return name, variant
        return name, self._variants[key]


def run_batch(key: Hashable, images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The worker's call: one or more same-sized images through one predictor."""
    predictor = key[0]
    if len(images) == 1 or not hasattr(predictor, "predict_batch"):
        return [predictor.predict(im) for im in images]
    return predictor.predict_batch(images)


# -- the app ----------------------------------------------------------------------------------
def create_app(
    models: dict,
    *,
    max_queue: int = 16,
    max_batch: int = 1,
    max_upload_bytes: int = 25 * MiB,
    max_pixels: int = 25_000_000,
) -> FastAPI:
    """A FastAPI app serving ``models`` (name -> :class:`~seglab.inference.Predictor`; the
    first is the default). ``max_queue`` jobs may wait for inference (more: 503);
    ``max_batch`` same-sized queued images run in one forward pass."""
    served = Models(models)
    registry = CollectorRegistry()
    requests_total = Counter(
        "seglab_http_requests", "HTTP requests", ["path", "method", "status"], registry=registry
    )
    latency = Histogram(
        "seglab_http_request_duration_seconds",
        "HTTP request latency",
        ["path"],
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        registry=registry,
    )
    inference = Histogram(
        "seglab_inference_batch_seconds",
        "time of one batch in the inference worker",
        buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        registry=registry,
    )
    batch_size = Histogram(
        "seglab_inference_batch_size",
        "images per forward pass",
        buckets=tuple(range(1, 17)),
        registry=registry,
    )
    rejected = Counter(
        "seglab_queue_rejected", "requests refused with 503 (queue full)", registry=registry
    )
    depth = Gauge("seglab_queue_depth", "jobs waiting for inference", registry=registry)

    def on_batch(n: int, seconds: float) -> None:
        batch_size.observe(n)
        inference.observe(seconds)

    queue = InferenceQueue(run_batch, max_queue=max_queue, max_batch=max_batch, on_batch=on_batch)
    depth.set_function(lambda: queue.depth)
    solo = itertools.count()

    def busy(retry_after: int) -> JSONResponse:
        rejected.inc()
        return error(
            503,
            "queue_full",
            f"the server is busy ({queue.max_queue} images queued); retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        queue.start()
        yield
        queue.stop()

    app = FastAPI(
        title="seglab",
        version="1",
        description="Image segmentation with seglab models. Web page at /.",
        lifespan=lifespan,
    )
    app.state.queue = queue
    app.state.models = served
    app.state.registry = registry
    known = {"/", "/healthz", "/metrics", "/v1/models", "/v1/segment", "/openapi.json", "/docs"}
    methods = {"GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"}  # others: "other"
    body_limit = max_upload_bytes + 64 * 1024  # the file plus the multipart framing and fields

    def too_large_body() -> JSONResponse:
        return error(
            413, "too_large", f"the request is above the upload limit of {max_upload_bytes} bytes"
        )

    app.add_middleware(BodyLimit, path="/v1/segment", limit=body_limit)

    @app.middleware("http")
    async def measure(request: Request, call_next):
        path = request.url.path
        label = path if path in known else "/static" if path.startswith("/static/") else "other"
        start = time.perf_counter()
        size = request.headers.get("content-length")
        if path == "/v1/segment" and size and size.isdigit() and int(size) > body_limit:
            response = too_large_body()
        else:
            response = await call_next(request)
        latency.labels(label).observe(time.perf_counter() - start)
        method = request.method if request.method in methods else "other"
        requests_total.labels(label, method, str(response.status_code)).inc()
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        problems = []
        for e in exc.errors():
            where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
            problems.append({"field": where, "message": str(e.get("msg", ""))})
        text = "; ".join(f"{p['field']}: {p['message']}" for p in problems) or "invalid request"
        return error(422, "invalid_request", text, detail=problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if isinstance(exc.__cause__, BodyTooLarge):
            return too_large_body()
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error(exc.status_code, code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception):  # a bug, not bad input: still JSON
        return error(500, "internal", f"internal error: {type(exc).__name__}: {one_line(exc)}")

    @app.exception_handler(UploadError)
    async def bad_upload(request: Request, exc: UploadError):
        return error(exc.status, exc.code, exc.message)

    # -- endpoints -------------------------------------------------------------------------
    @app.get("/healthz", response_model=Health, tags=["service"])
    async def healthz() -> Health:
        """Liveness: the models are loaded and the inference worker accepts jobs."""
        return Health(
            status="ok",
            models=list(served.base),
            queue_depth=queue.depth,
            queue_capacity=queue.max_queue,
        )

    @app.get(
        "/metrics",
        tags=["service"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def metrics() -> Response:
        """Request counts, latency histograms and queue state in Prometheus text format."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", response_model=ModelList, tags=["segmentation"])
    async def list_models() -> ModelList:
        """The served models: classes, colours, backend and input policy."""
        out = []
        for name, p in served.base.items():
            meta = p.meta
            backend, precision = _backend_info(p)
            scale = float(getattr(p, "scale", 1.0))
            tiled = getattr(p, "max_pixels", None)
            out.append(
                ModelInfo(
                    name=name,
                    kind=_kind(p),
                    backend=backend,
                    precision=precision,
                    classes=[
                        ClassInfo(index=i, name=str(c), color=[int(v) for v in meta["colors"][i]])
                        for i, c in enumerate(meta["classes"])
                    ],
                    ignore_index=meta.get("ignore_index"),
                    input=InputPolicy(
                        accepted_types=list(ACCEPTED),
                        max_upload_bytes=max_upload_bytes,
                        max_pixels=max_pixels,
                        in_channels=int(meta.get("in_channels", 3)),
                        scale=scale,
                        tiled_above_pixels=int(tiled / max(scale, 1.0) ** 2) if tiled else None,
                        tta=_tta_text(p),
                    ),
                )
            )
        return ModelList(default=served.default, models=out)

    @app.post(
        "/v1/segment",
        tags=["segmentation"],
        response_model=SegmentResult,
        responses={
            200: {
                "description": "format=png: the class-index mask (8-bit grey PNG, the input's "
                "size; instance models: 16-bit instance ids, 0 = background); format=json: "
                "per-class areas and RLE masks (instance models: and the objects)",
                "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
            },
            **ERRORS,
        },
    )
    async def segment(
        file: UploadFile = File(description="the image: PNG, JPEG, WebP, BMP, TIFF or GIF"),
        model: str | None = Form(None, description="model name (default: the first served)"),
        tta: str | None = Form(
            None,
            description="test-time augmentation, e.g. hflip,vflip,0.75,1.25; none turns the "
            "model's default off",
        ),
        format: Literal["png", "json"] = Form("png", description="png: index mask; json: areas"),
    ):
        """Segment one image: the class-index mask as a PNG, or per-class areas and RLE."""
        name, predictor = served.get(model, tta)
        if queue.full:  # refuse before decoding: a busy server spends nothing on it
            return busy(queue.retry_after())
        data = await file.read(max_upload_bytes + 1)
        intensity = getattr(predictor, "meta", {}).get("intensity_range")
        image = await run_in_threadpool(
            decode_upload, data, max_upload_bytes, max_pixels, intensity
        )
        if hasattr(predictor, "adapt"):
            try:
                predictor.adapt(image, "the upload")
            except SeglabError as err:
                raise UploadError(422, "wrong_channels", one_line(err)) from None
        h, w = image.shape[:2]
        tiled = hasattr(predictor, "tiles") and predictor.tiles(h, w)
        key = (predictor, (h, w, image.shape[2]), next(solo) if tiled else None)
        start = time.perf_counter()
        try:
            result = await queue.submit(key, image)
        except QueueFull as full:
            return busy(full.retry_after)
        except SeglabError as err:
            raise UploadError(422, "cannot_segment", one_line(err)) from None
        elapsed = (time.perf_counter() - start) * 1000
        backend, _ = _backend_info(predictor)
        kind = _kind(predictor)
        headers = {"X-Seglab-Model": name, "X-Seglab-Backend": backend, "X-Seglab-Kind": kind}
        meta = predictor.meta
        mask, instances = result, None
        if kind == "instance":  # (instance map, (class, score) per id)
            inst, objects = result
            if len(objects) > 65535:
                raise UploadError(
                    422, "too_many_objects", f"{len(objects)} objects do not fit a 16-bit PNG"
                )
            mask = inst.astype(np.uint16)
        if format == "png":
            data = await run_in_threadpool(encode_png, mask)
            return Response(data, media_type="image/png", headers=headers)
        if kind == "instance":
            mask, instances = await run_in_threadpool(
                instance_objects, mask, objects, meta["classes"]
            )
        classes = await run_in_threadpool(areas, mask, meta["classes"], meta["colors"], True)
        body = SegmentResult(
            model=name,
            kind=kind,
            width=w,
            height=h,
            tta=_tta_text(predictor),
            classes=classes,
            instances=instances,
            server_ms=round(elapsed, 2),
        )
        return JSONResponse(body.model_dump(), headers=headers)

    # -- the web page ----------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
