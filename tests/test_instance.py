"""Instance segmentation: metrics against pycocotools, DSB2018 score, targets, watershed,
Mask R-CNN and boundary U-Net training, evaluation and prediction, bad annotations."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import _disc, run_cli, shared_dataset, write_config
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from seglab.config import DataConfig, config_from_dict
from seglab.data.dataset import DatasetDefinition
from seglab.instance.data import InstanceDataset, annotation_problems, list_collate
from seglab.instance.metrics import InstanceMetrics, dsb_score
from seglab.instance.targets import boundary_targets, maskrcnn_target
from seglab.instance.watershed import instances_from_probs

# ------------------------------------------------------------------------ COCO AP


def _synthetic_case(seed: int = 0):
    """Three images of non-overlapping discs with two categories, and predictions: shifted,
    shrunk, missing and spurious objects with random scores."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(3):
        shape = (60, 80)
        inst = np.zeros(shape, np.int32)
        labels = {}
        dets = []
        for k, (cy, cx) in enumerate([(15, 15), (15, 50), (42, 20), (42, 60)], start=1):
            r = rng.uniform(6, 11)
            inst[_disc(shape, cy, cx, r)] = k
            labels[k] = int(rng.integers(1, 3))
            if rng.random() < 0.8:  # detected, shifted and resized
                m = _disc(shape, cy + rng.integers(-3, 4), cx + rng.integers(-3, 4), r * 0.9)
                lab = labels[k] if rng.random() < 0.85 else 3 - labels[k]
                dets.append({"mask": m, "label": lab, "score": float(rng.random())})
        for _ in range(2):  # false positives
            m = _disc(shape, rng.integers(5, 55), rng.integers(5, 75), 4)
            dets.append({"mask": m, "label": int(rng.integers(1, 3)), "score": float(rng.random())})
        images.append((inst, labels, dets))
    return images


def test_mask_ap_equals_pycocotools_on_the_same_predictions():
    cats = [0, 3, 7]  # class index -> category id (non-contiguous, as COCO)
    images = _synthetic_case()
    ours = InstanceMetrics(cats)
    gt = {"images": [], "annotations": [], "categories": [{"id": 3}, {"id": 7}]}
    results = []
    for n, (inst, labels, dets) in enumerate(images, start=1):
        for d in dets:
            d["box"] = None
        ours.update(f"{n}.png", inst, labels, None, inst, dets)
        # the reference: straight pycocotools, without seglab's helpers
        gt["images"].append({"id": n, "height": inst.shape[0], "width": inst.shape[1]})
        for k in np.unique(inst)[1:]:
            rle = mask_utils.encode(np.asfortranarray((inst == k).astype(np.uint8)))
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": n,
                    "category_id": cats[labels[int(k)]],
                    "segmentation": rle,
                    "area": float(mask_utils.area(rle)),
                    "bbox": mask_utils.toBbox(rle).tolist(),
                    "iscrowd": 0,
                }
            )
        for d in dets:
            rle = mask_utils.encode(np.asfortranarray(d["mask"].astype(np.uint8)))
            results.append(
                {
                    "image_id": n,
                    "category_id": cats[d["label"]],
                    "segmentation": rle,
                    "score": d["score"],
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(results), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    m = ours.compute()
    assert 0.05 < ev.stats[0] < 0.95  # a non-trivial case
    assert m["mask_AP"] == pytest.approx(ev.stats[0], abs=1e-12)
    assert m["mask_AP50"] == pytest.approx(ev.stats[1], abs=1e-12)
    assert m["mask_AP75"] == pytest.approx(ev.stats[2], abs=1e-12)


# ------------------------------------------------------------------------ DSB2018 metric


def test_dsb_score_hand_made_cases():
    gt = np.zeros((20, 20), np.int32)
    gt[0:10, 0:10] = 1  # 100 pixels
    gt[12:18, 12:18] = 2
    assert dsb_score(gt, gt) == 1.0
    assert dsb_score(gt, gt * 7) == 1.0  # ids need not agree
    assert dsb_score(np.zeros_like(gt), np.zeros_like(gt)) == 1.0  # nothing to find
    assert dsb_score(gt, np.zeros_like(gt)) == 0.0
    assert dsb_score(np.zeros_like(gt), gt) == 0.0
    one = np.where(gt == 1, 1, 0)
    # object 1 alone: IoU 0.8 -> matched at t = 0.50 .. 0.75 (6 of 10 thresholds)
    pred = one.copy()
    pred[8:10, 0:10] = 0
    assert dsb_score(one, pred) == pytest.approx(0.6)
    # one of two objects found exactly: TP 1, FN 1 at every threshold
    assert dsb_score(gt, one) == pytest.approx(0.5)
    # one exact, one spurious: TP 1, FP 1
    assert dsb_score(one, gt) == pytest.approx(0.5)
    # two objects merged into one prediction: IoU 100/136 < 0.75 -> 0 TP above 0.7
    merged = (gt > 0).astype(np.int32)
    iou = 100 / 136
    n_tp = sum(1 for t in np.arange(0.5, 1.0, 0.05) if iou > t)
    assert dsb_score(gt, merged) == pytest.approx(n_tp * (1 / 2) / 10)


# ------------------------------------------------------------------------ targets, watershed


def test_targets_from_instance_maps():
    inst = np.zeros((12, 20), np.int32)
    inst[2:10, 2:10] = 1
    inst[2:10, 10:18] = 2  # touching object 1
    t = boundary_targets(inst, width=1)
    assert t[0, 0] == 0 and t[5, 5] == 1 and t[5, 14] == 1
    assert (t[2:10, 9] == 2).all() and (t[2:10, 10] == 2).all()  # the shared border
    assert (t[2, 2:18] == 2).all()  # the outer border
    t2 = boundary_targets(inst, width=2)
    assert (t2[3:9, 8] == 2).all() and t2[5, 7] == 1
    crowd = np.zeros_like(inst, bool)
    crowd[10:, :] = True
    assert (boundary_targets(inst, 1, crowd)[10:] == 255).all()
    target = maskrcnn_target(inst, {1: 3, 2: 5})
    assert target["boxes"].tolist() == [[2, 2, 10, 10], [10, 2, 18, 10]]
    assert target["labels"].tolist() == [3, 5]
    assert target["masks"].shape == (2, 12, 20) and target["masks"][1, 5, 14] == 1
    empty = maskrcnn_target(np.zeros((8, 8), np.int32))
    assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, 8, 8)


def test_watershed_recovers_touching_discs():
    shape = (64, 96)
    a, b = _disc(shape, 32, 34, 16), _disc(shape, 32, 60, 14)  # overlapping discs
    c = _disc(shape, 8, 85, 5)
    gt = np.zeros(shape, np.int32)
    gt[a] = 1
    gt[b & ~a] = 2
    gt[c] = 3
    assert int((gt > 0).sum()) < int(a.sum() + b.sum() + c.sum())  # they do touch
    # imperfect network output: one-hot targets blurred, plus noise
    t = boundary_targets(gt, width=2)
    rng = np.random.default_rng(0)
    probs = [
        cv2.GaussianBlur((t == k).astype(np.float32), (5, 5), 1.0)
        + rng.normal(0, 0.03, shape).astype(np.float32)
        for k in (1, 2)
    ]
    probs = [np.clip(p, 0, 1) for p in probs]
    inst, scores = instances_from_probs(probs[0], probs[1], 0.6, 0.5, min_area=8)
    assert inst.max() == 3 and len(scores) == 3 and (scores > 0.5).all()
    assert dsb_score(gt, inst) > 0.6
    union_only = instances_from_probs(probs[0] + probs[1], np.zeros(shape), 0.6, 0.5)[0]
    assert union_only.max() == 2  # without the boundary class the discs merge
    assert dsb_score(gt, inst) > dsb_score(gt, union_only)


# ------------------------------------------------------------------------ data sets


def _square(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


@pytest.fixture
def bad_coco(tmp_path: Path) -> Path:
    """COCO train = val: 3 images 48 x 64 with bad annotations (categories 3 and 7)."""
    (tmp_path / "annotations").mkdir()
    images = []
    for split in ("train2017", "val2017"):
        (tmp_path / split).mkdir()
        for k, name in enumerate(["a.png", "b.png", "c.png"], start=1):
            img = np.full((48, 64, 3), 40 * k, np.uint8)
            cv2.circle(img, (20, 20), 8, (250, 200, 100), -1)
            cv2.imwrite(str(tmp_path / split / name), img)
            if split == "val2017":
                images.append({"id": k, "file_name": name, "height": 48, "width": 64})
    anns = [
        {"image_id": 1, "category_id": 3, "segmentation": [_square(12, 12, 28, 28)]},
        {"image_id": 1, "category_id": 7, "segmentation": [_square(-10, -10, 5, 5)]},  # outside
        {
            "image_id": 2,
            "category_id": 3,
            "bbox": [5, 5, 0, 0],
            "segmentation": [_square(30, 20, 40, 30)],
        },
        {"image_id": 2, "category_id": 3, "segmentation": [[1, 1, 4, 4]]},  # 2-point polygon
        {"image_id": 2, "category_id": 3, "segmentation": {"size": [48, 64], "counts": "@@"}},
        {"image_id": 2, "category_id": 7, "iscrowd": 1, "segmentation": [_square(0, 40, 10, 48)]},
    ]  # image 3: no annotation
    for i, a in enumerate(anns, start=1):
        a.setdefault("iscrowd", 0)
        a["id"] = i
    data = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": 7, "name": "train"}, {"id": 3, "name": "car"}],
    }
    for split in ("train2017", "val2017"):
        (tmp_path / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return tmp_path


def _config(root: Path, fmt: str, **instance) -> dict:
    return {
        "name": "inst",
        "task": "instance",
        "data": {"format": fmt, "root": str(root)},
        "model": {"name": "maskrcnn", "encoder": "mobilenet_v3_large"},
        "instance": {"min_size": 64, "max_size": 96, "crop": None, **instance},
        "train": {"epochs": 1, "batch_size": 2, "num_workers": 0, "lr": 1e-3},
    }


def test_bad_annotations_counted_and_mask_rcnn_trains_and_evaluates_on_them(bad_coco):
    from seglab.instance.task import InstanceTask

    cfg = config_from_dict(_config(bad_coco, "coco"))
    d = DatasetDefinition.from_config(cfg.data)
    problems = annotation_problems(d, "val")
    assert problems["polygon_outside_image"] == 1 and problems["zero_area_box"] == 1
    assert problems["short_polygon"] == 1 and problems["bad_segmentation"] == 1
    assert problems["image_without_annotations"] == 1
    ds = InstanceDataset(d, "val")
    assert ds.empty_images == 1  # image 3
    s = ds.samples
    assert s[0].labels == {1: 1, 2: 2}  # car -> 1, train (clipped) -> 2
    assert s[1].crowd is not None and s[1].crowd[44, 5]
    assert s[2].instances.max() == 0 and s[2].crowd is None
    torch.manual_seed(0)
    from seglab.instance.run import instance_meta

    task = InstanceTask(cfg.model_dump(mode="json"), instance_meta(d))
    task.train()
    loss = task.training_step(list_collate([ds[0], ds[2]]), 0)  # one image without objects
    assert torch.isfinite(loss)
    loss.backward()
    for i in range(len(ds)):
        task._collect(list_collate([ds[i]]))
    m = task.compute_metrics(tune=True)
    assert m["images"] == 3 and 0 <= m["dsb_score"] <= 1 and "box_AP" in m
    assert set(m["thresholds"]) == {"score_threshold"}


def test_augmentation_keeps_the_shape_of_non_square_images(bad_coco):
    d = DatasetDefinition.from_config(config_from_dict(_config(bad_coco, "coco")).data)
    ds = InstanceDataset(d, "train", crop=None, augment=True)
    torch.manual_seed(0)
    for _ in range(40):
        b = ds[1]  # 48 x 64 with a crowd region
        assert b["image"].shape == (3, 48, 64)
        assert b["instances"].shape == b["crowd"].shape == (48, 64)


def _det(y0: int, x0: int, size: int, score: float) -> dict:
    prob = np.full((size, size), 255, np.uint8)
    return {"offset": (y0, x0), "prob": prob, "score": score, "label": 1,
            "box": [x0, y0, x0 + size, y0 + size]}  # fmt: skip


def test_predictions_in_crowd_regions_are_not_scored(bad_coco):
    from seglab.instance.run import instance_meta
    from seglab.instance.task import InstanceTask

    crowd = np.zeros((32, 32), bool)
    crowd[:16, :16] = True
    empty = np.zeros((32, 32), np.int32)
    pred = empty.copy()
    pred[2:10, 2:10] = 1  # inside the crowd region
    pred[12:20, 4:12] = 2  # exactly half inside: a false positive
    m = InstanceMetrics([0, 1], class_agnostic=True)
    m.update("crowd", empty, {}, crowd, np.where(pred == 1, 1, 0), [])
    m.update("half", empty, {}, crowd, pred, [])
    assert m.per_image[0]["dsb_score"] == 1.0 and m.per_image[0]["count_error"] == 0
    assert m.per_image[1]["dsb_score"] == 0.0 and m.per_image[1]["count_error"] == 1
    # tuning: a confident detection in the crowd must not push the threshold above the
    # real object's score
    cfg = _config(bad_coco, "coco")
    task = InstanceTask(
        cfg, instance_meta(DatasetDefinition.from_config(config_from_dict(cfg).data))
    )
    target = empty.copy()
    target[20:28, 20:28] = 1
    task._raw = [{"shape": (32, 32), "dets": [_det(2, 2, 8, 0.5)]}] * 2
    task._raw += [{"shape": (32, 32), "dets": [_det(20, 20, 8, 0.35)]}]
    task._targets = [("a", empty, {}, crowd), ("b", empty, {}, crowd), ("c", target, {1: 1}, None)]
    out = task.compute_metrics(tune=True)
    assert out["thresholds"] == {"score_threshold": 0.3}
    assert out["dsb_score"] == 1.0 and out["mean_abs_count_error"] == 0


def test_maskrcnn_resnet50_builds_and_runs_a_step():
    from seglab.errors import SeglabError
    from seglab.instance.maskrcnn import MaskRCNNModel, build_maskrcnn, detect

    with pytest.raises(SeglabError, match="5 levels"):
        build_maskrcnn(2, "resnet50", anchor_sizes=[8, 16])
    net = MaskRCNNModel(
        build_maskrcnn(3, "resnet50", min_size=64, max_size=64, anchor_sizes=[8, 16, 32, 64, 128])
    )
    inst = np.zeros((64, 64), np.int32)
    inst[10:30, 10:30] = 1
    inst[35:60, 30:50] = 2
    image = torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
    net.train()
    losses = net([image], [maskrcnn_target(inst, {1: 1, 2: 2})])
    assert {"loss_mask", "loss_classifier", "loss_objectness"} <= set(losses)
    sum(losses.values()).backward()
    net.eval()
    with torch.no_grad():
        out = net([image])[0]
    assert out["masks"].shape[1:] == (1, 64, 64)
    # seglab pastes each mask into its box only: same masks as torchvision's full images
    raw = detect(net, image)
    assert len(raw["dets"]) == len(out["masks"]) > 0
    for d, full in zip(raw["dets"], out["masks"][:, 0], strict=True):
        mine = np.zeros((64, 64), bool)
        (y0, x0), m = d["offset"], d["prob"] >= 128
        mine[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]] = m
        np.testing.assert_array_equal(mine, (full >= 0.5).numpy())


# ------------------------------------------------------------------------ end to end


def test_boundary_unet_trains_tunes_evaluates_and_predicts(discs_dsb, instance_run, tmp_path):
    from seglab.evaluation.evaluate import evaluate
    from seglab.instance.run import predict_instance

    run = instance_run
    summary = json.loads((run / "summary.json").read_text())
    assert summary["method"] == "boundary" and summary["best_val_dsb_score"] is not None
    rows = json.loads((run / "metrics.json").read_text())
    assert set(rows[-1]["thresholds"]) == {"marker_threshold", "foreground_threshold"}
    metrics, out = evaluate(run, split="val")
    assert metrics["images"] == 2 and "box_AP" not in metrics
    assert metrics["dsb_score"] == pytest.approx(summary["best_val_dsb_score"], abs=1e-6)
    assert (out / "per_image.csv").is_file() and (out / "results.json").is_file()
    written = predict_instance(run, [discs_dsb / "images" / "im6.png"], tmp_path / "pred")
    inst = cv2.imread(str(written[0]), cv2.IMREAD_UNCHANGED)
    assert inst.dtype == np.uint16 and inst.shape == (64, 64)
    assert (tmp_path / "pred" / "im6_overlay.png").is_file()
    res = json.loads((tmp_path / "pred" / "results.json").read_text())
    assert len(res) == len(np.unique(inst)) - 1
    assert all(r["file_name"] == "im6.png" and "counts" in r["segmentation"] for r in res)


def test_instance_predict_writes_every_readable_image_then_fails(discs_dsb, instance_run, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    for name in ("a", "c"):
        (inputs / f"{name}.png").write_bytes((discs_dsb / "images" / "im6.png").read_bytes())
    (inputs / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    r = run_cli("predict", instance_run, inputs, "--out", out)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "predicted 2 of 3" in errors[0] and "b.png" in errors[0]
    for name in ("a", "c"):
        assert (out / f"{name}_instances.png").is_file() and (out / f"{name}_overlay.png").is_file()
    res = json.loads((out / "results.json").read_text())
    assert {r["file_name"] for r in res} == {"a.png", "c.png"}


def test_tiny_coco_trains_and_evaluates_end_to_end_via_cli(tmp_path):
    root = shared_dataset("tiny_coco")
    raw = _config(
        root,
        "coco",
        crop=[160, 160],
        min_size=128,
        max_size=160,
        detections_per_image=20,
        proposals=100,  # the box and mask heads run per proposal: torchvision's 1000 cost most
    )
    raw["data"]["train_fraction"] = 0.4
    raw["train"]["val_every"] = 5  # no validation pass in training: evaluate scores val
    raw["train"]["max_steps"] = 3  # of 10 in the epoch
    cfg = write_config(tmp_path / "coco.yaml", raw)
    r = run_cli("train", cfg, "--runs-dir", tmp_path / "runs", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    run = tmp_path / "runs" / "inst"
    assert (run / "metrics.csv").read_text().splitlines()[1].startswith("0,3,")
    summary = json.loads((run / "summary.json").read_text())
    val_json = COCO(str(root / "annotations" / "instances_val2017.json"))
    empty = [i for i in val_json.getImgIds() if not val_json.getAnnIds(imgIds=[i])]
    assert summary["annotation_problems"]["val"]["image_without_annotations"] == len(empty)
    r = run_cli("evaluate", run, "--split", "val", "--out", tmp_path / "ev", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "mask_AP" in r.stdout and "DSB2018" in r.stdout
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["images"] == 50 and m["mask_AP"] is not None and m["box_AP"] is not None
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    coco_ids = set(val_json.getImgIds())
    assert {r["image_id"] for r in results} <= coco_ids  # the JSON's own image ids
    # --proposals replaces the run's 100 in the model's RPN at inference (metrics.json reads
    # it back from the RPN)
    assert m["proposals"] == 100
    r = run_cli("evaluate", run, "--split", "val", "--proposals", "3", "--out", tmp_path / "p3")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "p3" / "metrics.json").read_text())["proposals"] == 3
    img = sorted((root / "val2017").glob("*.jpg"))[0]
    r = run_cli("predict", run, img, "--out", tmp_path / "pred", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "pred" / f"{img.stem}_instances.png").is_file()


def test_proposals_bound_the_rpn_at_inference_only(bad_coco):
    from seglab.instance.run import instance_meta
    from seglab.instance.task import InstanceTask

    meta = instance_meta(
        DatasetDefinition.from_config(config_from_dict(_config(bad_coco, "coco")).data)
    )
    torch.manual_seed(0)
    image = torch.rand(1, 3, 96, 96)
    kept = {}
    for n in (1000, 40):
        task = InstanceTask(_config(bad_coco, "coco", proposals=n), meta).eval()
        net = task.model.net
        assert net.rpn._post_nms_top_n == {"training": 2000, "testing": n}  # training untouched
        with torch.inference_mode():
            images, _ = net.transform(list(image))
            proposals, _ = net.rpn(images, net.backbone(images.tensors))
        kept[n] = len(proposals[0])
    assert kept[40] <= 40 < kept[1000]  # a random network's RPN keeps more than 40 by default


def test_proposals_option_refused_where_there_is_no_rpn(instance_run, trained_run, tmp_path):
    for run in (instance_run, trained_run):  # boundary U-Net, semantic U-Net
        for cmd in (["evaluate", run, "--split", "val"], ["predict", run, tmp_path]):
            r = run_cli(*cmd, "--proposals", "10", "--out", tmp_path / "out")
            assert r.returncode == 1
            assert r.stderr.strip().endswith("--proposals applies to Mask R-CNN runs only")
            assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_instance_config_errors(tmp_path):
    from seglab.errors import SeglabError
    from seglab.instance.task import method_of

    raw = _config(tmp_path, "coco")
    raw["instance"]["bogus"] = 1
    with pytest.raises(SeglabError, match="unknown key 'instance.bogus'"):
        config_from_dict(raw)
    raw = _config(tmp_path, "coco", method="boundary")
    with pytest.raises(SeglabError, match="semantic model.name"):
        method_of(config_from_dict(raw))
    d = DatasetDefinition.from_config(
        DataConfig(format="folder", root=tmp_path, classes=["a", "b"])
    )
    with pytest.raises(SeglabError, match="task: instance reads"):
        InstanceDataset(d, "train")


def test_pretrained_weights_offline_give_one_line(monkeypatch):
    from torchvision.models._api import WeightsEnum

    from seglab.errors import SeglabError
    from seglab.instance.maskrcnn import build_maskrcnn

    def offline(self, *a, **k):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    with pytest.raises(SeglabError, match="cannot get imagenet weights.*encoder_weights: path"):
        build_maskrcnn(2, "mobilenet_v3_large", "imagenet")
    with pytest.raises(SeglabError, match="COCO weights of maskrcnn_resnet50_fpn"):
        build_maskrcnn(2, "resnet50", "coco")
    net = build_maskrcnn(2, "resnet50", "coco", load_weights=False)  # as from a checkpoint
    assert type(net.backbone.body.bn1).__name__ == "FrozenBatchNorm2d"
