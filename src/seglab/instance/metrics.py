"""Instance metrics: the DSB2018 score, object counts, and COCO AP through pycocotools."""

from __future__ import annotations

import contextlib
import io

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

DSB_THRESHOLDS = np.arange(0.5, 1.0, 0.05)


def iou_matrix(target: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU of every target object (rows, ids 1..) with every predicted object (columns)."""
    t_ids, t = np.unique(target, return_inverse=True)
    p_ids, p = np.unique(pred, return_inverse=True)
    inter = np.zeros((len(t_ids), len(p_ids)), np.int64)
    np.add.at(inter, (t.ravel(), p.ravel()), 1)
    area_t, area_p = inter.sum(1), inter.sum(0)
    union = area_t[:, None] + area_p[None, :] - inter
    iou = inter / np.maximum(union, 1)
    return iou[t_ids > 0][:, p_ids > 0]


def dsb_score(target: np.ndarray, pred: np.ndarray) -> float:
    """The 2018 Data Science Bowl metric of one image.

    Mean over IoU thresholds t = 0.5, 0.55, ..., 0.95 of TP / (TP + FP + FN), where a
    target and a predicted object match when their IoU > t (above 0.5 a match is unique).
    An image with no target and no predicted object scores 1."""
    iou = iou_matrix(target, pred)
    n_t, n_p = iou.shape
    if n_t == 0 and n_p == 0:
        return 1.0
    scores = []
    for t in DSB_THRESHOLDS:
        tp = int((iou > t).sum())
        fp, fn = n_p - tp, n_t - tp
        scores.append(tp / (tp + fp + fn))
    return float(np.mean(scores))


def drop_crowd(pred: np.ndarray, crowd: np.ndarray | None) -> np.ndarray:
    """``pred`` without the objects lying mostly (over half their pixels) in the COCO crowd
    region ``crowd``, which is not scored: the DSB score and counts ignore them."""
    if crowd is None or not crowd.any():
        return pred
    area = np.bincount(pred.ravel())
    inside = np.bincount(pred[crowd], minlength=len(area))
    drop = np.flatnonzero(2 * inside > area)
    drop = drop[drop > 0]
    return np.where(np.isin(pred, drop), 0, pred) if len(drop) else pred


def count(instances: np.ndarray) -> int:
    ids = np.unique(instances)
    return int((ids > 0).sum())


def encode(mask: np.ndarray) -> dict:
    """Binary H x W mask -> COCO RLE with a JSON-able ``counts`` string."""
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def encode_at(
    shape: tuple[int, int], offset: tuple[int, int], crop: np.ndarray, buf: np.ndarray | None
) -> dict:
    """RLE of an image-sized mask that is ``crop`` placed at ``offset`` (y, x), else empty.

    ``buf`` (uint8, Fortran order, ``shape``, all zero) is reused between calls, so many
    objects of a large image never hold a full-size mask each."""
    if buf is None:
        buf = np.zeros(shape, np.uint8, order="F")
    y0, x0 = offset
    h, w = crop.shape
    buf[y0 : y0 + h, x0 : x0 + w] = crop
    rle = encode(buf)
    buf[y0 : y0 + h, x0 : x0 + w] = 0
    return rle


def object_rles(inst: np.ndarray) -> list[tuple[tuple[slice, slice], dict]]:
    """Each id 1..N of an instance map: (its bounding slices, its image-sized RLE)."""
    from scipy import ndimage

    buf = np.zeros(inst.shape, np.uint8, order="F")
    return [
        (sl, encode_at(inst.shape, (sl[0].start, sl[1].start), inst[sl] == i, buf))
        for i, sl in enumerate(ndimage.find_objects(inst), start=1)
    ]


def gt_annotations(
    image_id: int,
    instances: np.ndarray,
    labels: dict[int, int],
    crowd: np.ndarray | None,
    category_ids: list[int],
    start_id: int,
) -> list[dict]:
    """COCO ground-truth annotations of one image from its instance map (``category_ids[k]``
    is the category id of class index k). The crowd region becomes an ``iscrowd``
    annotation of every category: detections there are neither matched nor false."""
    anns = []
    ids = [i for i in np.unique(instances) if i > 0]
    for n, i in enumerate(ids):
        rle = encode(instances == i)
        x, y, w, h = mask_utils.toBbox(rle).tolist()
        anns.append(
            {
                "id": start_id + n,
                "image_id": image_id,
                "category_id": category_ids[labels.get(int(i), 1)],
                "segmentation": rle,
                "area": float(mask_utils.area(rle)),
                "bbox": [x, y, w, h],
                "iscrowd": 0,
            }
        )
    if crowd is not None and crowd.any():
        rle = encode(crowd)
        for cat in category_ids[1:]:  # a crowd region is not scored for any class
            anns.append(
                {
                    "id": start_id + len(anns),
                    "image_id": image_id,
                    "category_id": cat,
                    "segmentation": rle,
                    "area": float(mask_utils.area(rle)),
                    "bbox": mask_utils.toBbox(rle).tolist(),
                    "iscrowd": 1,
                }
            )
    return anns


def coco_ap(gt: dict, results: list[dict], iou_type: str = "segm") -> dict[str, float]:
    """AP, AP50, AP75 (and small / medium / large) of ``results`` against the COCO dict ``gt``
    with pycocotools' COCOeval; -1 entries (no objects of that size) are reported as None."""
    names = ["AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large"]
    if not results or not gt["annotations"]:
        return dict.fromkeys(names, 0.0 if gt["annotations"] else None)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {n: (float(v) if v >= 0 else None) for n, v in zip(names, ev.stats[:6], strict=True)}


class InstanceMetrics:
    """Accumulates predictions and targets of a split; :meth:`compute` gives every metric.

    COCO AP uses each detection's own mask and score (overlaps allowed, as COCO expects);
    the DSB score and counts use the non-overlapping instance map, without the objects lying
    mostly in a crowd region."""

    def __init__(
        self, category_ids: list[int], class_agnostic: bool = False, boxes: bool = False
    ) -> None:
        """``boxes``: also box AP (from the detections' ``box``)."""
        self.boxes = boxes
        self.category_ids = category_ids if not class_agnostic else [0, 1]
        self.class_agnostic = class_agnostic
        self.gt: dict = {"info": {}, "images": [], "annotations": [], "categories": []}
        self.gt["categories"] = [{"id": c, "name": str(c)} for c in self.category_ids[1:]]
        self.results: list[dict] = []
        self.box_results: list[dict] = []
        self.per_image: list[dict] = []

    def update(
        self,
        name: str,
        target: np.ndarray,
        labels: dict[int, int],
        crowd: np.ndarray | None,
        pred: np.ndarray,
        detections: list[dict],
        image_id: int | None = None,
    ) -> None:
        """``detections``: {"rle" (COCO RLE) or "mask" (H x W bool), "label": class index,
        "score": float, "box": [x0, y0, x1, y1] or None}; ``image_id`` default: 1, 2, ...
        in call order."""
        image_id = image_id if image_id is not None else len(self.gt["images"]) + 1
        h, w = target.shape
        self.gt["images"].append({"id": image_id, "file_name": name, "height": h, "width": w})
        if self.class_agnostic:
            labels = {}
        self.gt["annotations"] += gt_annotations(
            image_id, target, labels, crowd, self.category_ids, len(self.gt["annotations"]) + 1
        )
        for d in detections:
            cat = self.category_ids[1 if self.class_agnostic else d["label"]]
            self.results.append(
                {
                    "image_id": image_id,
                    "category_id": cat,
                    "segmentation": d["rle"] if "rle" in d else encode(d["mask"]),
                    "score": float(d["score"]),
                }
            )
            if d.get("box") is not None:
                x0, y0, x1, y1 = (float(v) for v in d["box"])
                self.box_results.append(
                    {
                        "image_id": image_id,
                        "category_id": cat,
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "score": float(d["score"]),
                    }
                )
        pred = drop_crowd(pred, crowd)
        n_t, n_p = count(target), count(pred)
        self.per_image.append(
            {
                "image": name,
                "dsb_score": dsb_score(target, pred),
                "objects": n_t,
                "predicted": n_p,
                "count_error": n_p - n_t,
            }
        )

    def compute(self) -> dict:
        mask = coco_ap(self.gt, [dict(r) for r in self.results], "segm")
        out: dict = {f"mask_{k}": v for k, v in mask.items()}
        if self.boxes:
            box = coco_ap(self.gt, [dict(r) for r in self.box_results], "bbox")
            out.update({f"box_{k}": v for k, v in box.items()})
        n = max(len(self.per_image), 1)
        out["dsb_score"] = sum(r["dsb_score"] for r in self.per_image) / n
        out["mean_abs_count_error"] = sum(abs(r["count_error"]) for r in self.per_image) / n
        out["mean_objects"] = sum(r["objects"] for r in self.per_image) / n
        out["mean_predicted"] = sum(r["predicted"] for r in self.per_image) / n
        out["images"] = len(self.per_image)
        return out
