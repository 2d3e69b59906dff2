"""The evaluation report: every figure present, embedded, and telling the truth."""

from __future__ import annotations

import base64
import json
import re

import cv2
import numpy as np

from seglab.evaluation import report
from seglab.evaluation.evaluate import evaluate
from seglab.evaluation.report import error_map


def test_evaluate_writes_a_self_contained_report(trained_run, tmp_path):
    metrics, out = evaluate(trained_run, "test", out=tmp_path / "eval")
    page = (out / "report.html").read_text()
    for png in ("confusion_matrix.png", "class_iou.png", "training_curves.png", "gallery.png"):
        assert (out / png).is_file(), png
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 4  # everything embedded: the file alone is the report
    for data in images:
        decoded = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)
        assert decoded is not None and decoded.shape[0] > 100 and decoded.shape[1] > 100
    for name, m in metrics["per_class"].items():
        assert name in page
        if m["iou"] is not None:
            assert f"{100 * m['iou']:.2f}" in page
    assert f"{100 * metrics['mIoU']:.2f}%" in page
    embedded = json.loads(
        re.search(r'<script type="application/json" id="metrics">(.*?)</script>', page, re.S)
        .group(1)
        .replace("&quot;", '"')
    )
    assert embedded["mIoU"] == metrics["mIoU"]


def test_gallery_shows_best_and_worst_from_real_scores(trained_run, tmp_path):
    """The gallery rows come from per-image scores: the best row's mIoU >= the worst's."""
    from seglab.evaluation.evaluate import gallery_rows

    per_image = {0: 0.2, 1: 0.9, 2: 0.5, 3: None, 4: 0.7}
    calls = []

    class DS:
        pairs = [type("I", (), {"image": f"img{i}.png"}) for i in range(5)]

    def predict(i):
        calls.append(i)
        z = np.zeros((4, 4), np.uint8)
        return np.zeros((4, 4, 3), np.uint8), z, z

    rows = gallery_rows(per_image, predict, DS, n=2)
    assert [(r["group"], r["name"]) for r in rows] == [
        ("best", "img1.png"),
        ("best", "img4.png"),
        ("worst", "img0.png"),
        ("worst", "img2.png"),
    ]
    assert 3 not in calls  # an image without a score is never shown


def test_error_map_colours():
    target = np.array([[0, 1], [255, 2]])
    pred = np.array([[0, 2], [1, 2]])
    m = error_map(target, pred, 255)
    assert tuple(m[0, 0]) == (40, 40, 40) and tuple(m[0, 1]) == (230, 30, 30)
    assert tuple(m[1, 0]) == (200, 200, 200) and tuple(m[1, 1]) == (40, 40, 40)


def test_iou_chart_shows_na_classes_as_na_not_zero(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(report, "_save", lambda fig, path: figures.append(fig) or path)
    per_class = {"a": {"iou": 0.0}, "absent": {"iou": None}, "c": {"iou": 0.5}}
    colors = [[0, 0, 0], [0, 255, 0], [255, 0, 0]]
    report.plot_class_iou({"per_class": per_class, "mIoU": 0.25}, colors, tmp_path / "x.png")
    (ax,) = figures[0].axes
    bars = {round(p.get_x() + p.get_width() / 2): p.get_height() for p in ax.patches}
    assert bars == {0: 0.0, 2: 50.0}  # a real 0% bar for "a", no bar for "absent"
    assert [(t.get_position()[0], t.get_text()) for t in ax.texts] == [(1, "n/a")]
