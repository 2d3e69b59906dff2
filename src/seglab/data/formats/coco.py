"""COCO instances JSON (polygons, RLE, ``iscrowd``) read as semantic masks and instance maps.

Layout (as downloaded)::

    <root>/train2017/*.jpg   <root>/annotations/instances_train2017.json
    <root>/val2017/*.jpg     <root>/annotations/instances_val2017.json

Split ``train`` / ``val`` (or ``train2017`` / ``val2017``) reads
``annotations/instances_<split>2017.json`` and the images of ``<split>2017/``.
``data.splits.<split>`` may name another annotation JSON (relative to ``data.root`` or
absolute); its images are looked up in the folder named after the JSON
(``instances_val2017.json`` -> ``val2017/``), then ``<split>2017/``, ``<split>/``,
``images/`` and ``data.root`` itself. A split without a JSON whose image folder exists is
listed unlabelled (for ``seglab predict``).

Classes. Category ids (non-contiguous, e.g. 1..90) map to contiguous indices 1..K in
ascending id order; 0 is background, so there are K + 1 classes. :data:`DEFAULTS` carries
``background`` + the 80 standard COCO names; :func:`dataset_classes` returns
``background`` + the names of the JSON's own categories (the class list of any data set
whose categories differ: use it for ``data.classes``). The JSON always wins on the
*indices*: :func:`read_mask` refuses, with a one-line error giving the class list to use,
when the declared classes do not number K + 1, so a JSON with other categories is never
trained or scored under the 80 COCO names. Names given in ``data.classes`` with the right
count are kept: they only rename the JSON's categories.

Semantic masks. Every annotation is rasterised with pycocotools; ``iscrowd`` regions get
the ignore index. Overlaps: annotations are painted in order of decreasing pixel area
(ties keep the JSON's order), each overwriting what is below, so small objects stay
visible on top of large ones and a crowd region covers only what is larger than itself.

Instance maps (:func:`read_instances`): int32, 0 = background, ids 1..N given in the JSON's
annotation order to the non-crowd annotations whose mask is not empty; overlaps follow the
same painting order as the semantic mask.

Bad annotations never raise: polygons reaching outside the image are clipped to it (by
pycocotools' rasteriser, so masks equal ``COCO.annToMask``; coordinates absurdly far
outside are first cut geometrically), polygons with fewer than 3 points are dropped,
annotations that rasterise to nothing, refer to an unknown category, carry an unreadable
segmentation or lack ``id`` / ``image_id`` / ``category_id`` are skipped, and images without
annotations are all background. :func:`annotation_problems` counts each kind. Images and
categories without an ``id`` are refused (one-line error naming the JSON and the entry).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from seglab.data.formats import FormatDefaults, Item
from seglab.data.io import IMAGE_SUFFIXES
from seglab.errors import SeglabError

COCO_CLASSES = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
]

DEFAULTS = FormatDefaults(
    classes=["background", *COCO_CLASSES], colors=[], ignore_index=255, in_channels=3
)

#: The kinds of bad annotation :func:`annotation_problems` counts (annotations, except
#: ``image_without_annotations`` which counts images).
PROBLEM_KINDS = (
    "polygon_outside_image",  # a polygon reaches outside the image: clipped
    "zero_area_box",  # bbox with width or height <= 0 (the mask comes from the segmentation)
    "short_polygon",  # a polygon with fewer than 3 points: dropped
    "empty_mask",  # the annotation rasterises to no pixel: skipped
    "unknown_category",  # category_id not in the JSON's categories: skipped
    "bad_segmentation",  # missing or unreadable segmentation (malformed RLE ...): skipped
    "missing_key",  # no 'id', 'image_id' or 'category_id': dropped when the JSON is read
    "image_without_annotations",  # an image with no annotation: all background
)

#: The keys pycocotools needs in every annotation.
ANN_KEYS = {"id", "image_id", "category_id"}

# resolved JSON path -> ((mtime_ns, size), COCO); each file is parsed once per process
_COCO_CACHE: dict[str, tuple[tuple[int, int], COCO]] = {}


def load_coco(path: str | Path) -> COCO:
    """The pycocotools ``COCO`` object of annotation file ``path``, parsed once and cached."""
    path = Path(path)
    if not path.is_file():
        raise SeglabError(f"COCO annotation file {path} not found; check data.root or data.splits")
    key = str(path.resolve())
    st = path.stat()
    stamp = (st.st_mtime_ns, st.st_size)
    hit = _COCO_CACHE.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SeglabError(
            f"COCO annotation file {path} is not valid JSON ({err}); replace it"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise SeglabError(
            f"COCO annotation file {path} has no 'images' list; it is not a COCO instances file"
        )
    data.setdefault("annotations", [])
    data.setdefault("categories", [])
    for kind in ("images", "categories"):
        for i, entry in enumerate(data[kind]):
            if not isinstance(entry, dict) or "id" not in entry:
                raise SeglabError(
                    f"COCO annotation file {path}: {kind}[{i}] ({repr(entry)[:80]}) has no 'id'; "
                    "give every image and category an id"
                )
    anns = data["annotations"]
    data["annotations"] = [a for a in anns if isinstance(a, dict) and ANN_KEYS <= a.keys()]
    coco = COCO()
    coco.dataset = data
    coco.missing_keys = len(anns) - len(data["annotations"])  # counted by annotation_problems
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress
        coco.createIndex()
    _COCO_CACHE[key] = (stamp, coco)
    return coco


def category_index(coco: COCO) -> dict[int, int]:
    """Category id -> contiguous class index 1..K in ascending id order (0 = background)."""
    return {cid: i + 1 for i, cid in enumerate(sorted(coco.cats))}


def category_names(coco: COCO) -> list[str]:
    """``background`` + the JSON's category names in class-index order."""
    return ["background", *(str(coco.cats[c].get("name", c)) for c in sorted(coco.cats))]


def _split_dir(split: str) -> str:
    return split if split[-1:].isdigit() else f"{split}2017"


def _annotation_file(root: Path, split: str, spec: str | None) -> Path:
    if spec:
        return root / spec
    return root / "annotations" / f"instances_{_split_dir(split)}.json"


def _image_dir(root: Path, split: str, ann_file: Path, first: str | None) -> Path | None:
    stem = ann_file.stem
    candidates = [
        root / (stem.split("_", 1)[1] if "_" in stem else stem),
        root / _split_dir(split),
        root / split,
        root / "images",
        root,
    ]
    for c in candidates:
        if c.is_dir() and (first is None or (c / first).is_file()):
            return c
    return None


def list_split(root: Path, split: str, spec: str | None = None) -> list[Item]:
    """Items of ``split``: one per image of the annotation JSON (``ref`` = COCO image id,
    ``mask`` = the JSON path), or the unlabelled images of ``<split>2017/`` without a JSON."""
    ann_file = _annotation_file(root, split, spec)
    if not ann_file.is_file():
        if spec:
            raise SeglabError(
                f"split '{split}': annotation file {ann_file} not found; fix data.splits.{split}"
            )
        folder = root / _split_dir(split)
        if folder.is_dir():
            return [
                Item(p, None, p.stem)
                for p in sorted(folder.iterdir())
                if p.suffix.lower() in IMAGE_SUFFIXES
            ]
        raise SeglabError(
            f"COCO split '{split}': neither {ann_file} nor {folder}/ exists; check data.root "
            f"or set data.splits.{split} to an annotation file"
        )
    coco = load_coco(ann_file)
    images = coco.dataset["images"]
    if not images:
        return []
    first = images[0].get("file_name")
    img_dir = _image_dir(root, split, ann_file, first)
    if img_dir is None:
        raise SeglabError(
            f"{ann_file}: image {first} not found in {root}/{_split_dir(split)}/ or the other "
            "image folders seglab tries; put the images next to their annotation file"
        )
    items = []
    for im in images:
        if "id" not in im or "file_name" not in im:
            raise SeglabError(f"{ann_file}: image entry {im!r} lacks 'id' or 'file_name'")
        items.append(Item(img_dir / im["file_name"], ann_file, im["id"]))
    return items


def dataset_classes(root: Path, splits: dict[str, str] | None = None) -> list[str]:
    """``background`` + the category names of the data set's annotation JSONs.

    Reads the ``train`` and ``val`` JSONs that exist (``splits`` as in ``data.splits``);
    raises when they declare different categories. Falls back to :data:`DEFAULTS`."""
    splits = splits or {}
    found: list[tuple[Path, COCO]] = []
    for split in dict.fromkeys(["train", "val", *splits]):
        f = _annotation_file(root, split, splits.get(split))
        if f.is_file():
            found.append((f, load_coco(f)))
    if not found:
        return list(DEFAULTS.classes)
    f0, c0 = found[0]
    for f, c in found[1:]:
        if category_index(c) != category_index(c0) or category_names(c) != category_names(c0):
            raise SeglabError(
                f"{f} and {f0} declare different categories; all splits need the same list"
            )
    return category_names(c0)


def _image_size(coco: COCO, image_id: Any, image_path: Path | None) -> tuple[int, int]:
    info = coco.imgs.get(image_id)
    if info is None:
        raise SeglabError(f"image id {image_id} is not in the annotation file; fix the split")
    h, w = info.get("height"), info.get("width")
    if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
        return h, w
    if image_path is not None and image_path.is_file():
        from PIL import Image

        with Image.open(image_path) as im:
            return im.height, im.width
    raise SeglabError(
        f"image id {image_id} has no valid height/width in its annotation file and its image "
        "cannot be read; add height and width to the 'images' entry"
    )


def _clip_polygon(xy: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Sutherland-Hodgman clip of polygon ``xy`` (N x 2) to the box ``[x0, x1] x [y0, y1]``."""
    pts = xy
    for axis, bound, keep_low in ((0, x0, False), (0, x1, True), (1, y0, False), (1, y1, True)):
        if len(pts) == 0:
            break
        out = []
        prev = pts[-1]
        prev_in = prev[axis] <= bound if keep_low else prev[axis] >= bound
        for cur in pts:
            cur_in = cur[axis] <= bound if keep_low else cur[axis] >= bound
            if cur_in != prev_in:
                t = (bound - prev[axis]) / (cur[axis] - prev[axis])
                out.append(prev + t * (cur - prev))
            if cur_in:
                out.append(cur)
            prev, prev_in = cur, cur_in
        pts = np.asarray(out, dtype=np.float64).reshape(-1, 2)
    return pts


def _rle_string_counts(s: bytes) -> list[int]:
    """Run lengths of a compressed COCO RLE string (as pycocotools' ``rleFrString``);
    raises ValueError on a malformed string, which pycocotools may decode silently."""
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            if p >= len(s):
                raise ValueError("truncated RLE string")
            c = s[p] - 48
            if not 0 <= c < 64:
                raise ValueError("invalid RLE character")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        if x < 0:
            raise ValueError("negative RLE run")
        counts.append(x)
    return counts


def _to_rle(ann: dict, h: int, w: int, problems: Counter) -> dict | None:
    """The RLE of ``ann`` on an ``h x w`` image, or None (and a counted problem) if unusable."""
    bbox = ann.get("bbox")
    if bbox is not None:
        try:
            if len(bbox) != 4 or not (float(bbox[2]) > 0 and float(bbox[3]) > 0):
                problems["zero_area_box"] += 1
        except (TypeError, ValueError):
            problems["zero_area_box"] += 1
    seg = ann.get("segmentation")
    try:
        if isinstance(seg, list):
            polys, outside, short = [], False, False
            for poly in seg:
                xy = np.asarray(poly, dtype=np.float64).ravel()
                if not np.all(np.isfinite(xy)):
                    raise ValueError("non-finite coordinate")
                if len(xy) % 2:
                    xy = xy[:-1]
                if len(xy) < 6:
                    short = True
                    continue
                xy = xy.reshape(-1, 2)
                if (
                    xy[:, 0].min() < 0
                    or xy[:, 1].min() < 0
                    or xy[:, 0].max() > w
                    or (xy[:, 1].max() > h)
                ):
                    outside = True
                    # pycocotools clips while rasterising (pixel-identical to annToMask);
                    # polygons reaching absurdly far are cut first to bound its work (its
                    # line digitiser may then move a boundary pixel)
                    m = 8.0 * max(h, w)
                    if np.abs(xy - [w / 2, h / 2]).max() > m:
                        xy = _clip_polygon(xy, -m, -m, w + m, h + m)
                        if len(xy) < 3:
                            continue
                polys.append(xy.ravel().tolist())
            problems["short_polygon"] += short
            problems["polygon_outside_image"] += outside
            if not polys:
                if not short:  # every polygon was clipped away, or the list was empty
                    problems["empty_mask"] += 1
                return None
            rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
        elif isinstance(seg, dict) and "counts" in seg and "size" in seg:
            if [int(v) for v in seg["size"]] != [h, w]:
                raise ValueError("RLE size differs from the image")
            counts = seg["counts"]
            if isinstance(counts, list):
                if sum(int(c) for c in counts) != h * w:
                    raise ValueError("RLE counts do not sum to the image size")
                rle = mask_utils.frPyObjects(seg, h, w)
            else:
                raw = counts.encode() if isinstance(counts, str) else bytes(counts)
                if sum(_rle_string_counts(raw)) != h * w:
                    raise ValueError("RLE counts do not sum to the image size")
                rle = {"size": [h, w], "counts": raw}
        else:
            raise ValueError("no segmentation")
    except (TypeError, ValueError, IndexError, AttributeError):
        problems["bad_segmentation"] += 1
        return None
    if int(mask_utils.area(rle)) == 0:
        problems["empty_mask"] += 1
        return None
    return rle


def _image_annotations(
    coco: COCO, image_id: Any, h: int, w: int, problems: Counter
) -> list[tuple[dict, dict, int]]:
    """(annotation, RLE, class index) of the usable annotations of one image, in JSON order."""
    cats = category_index(coco)
    anns = coco.imgToAnns.get(image_id, [])
    if not anns:
        problems["image_without_annotations"] += 1
    out = []
    for ann in anns:
        cls = cats.get(ann.get("category_id"))
        if cls is None:
            problems["unknown_category"] += 1
            continue
        rle = _to_rle(ann, h, w, problems)
        if rle is not None:
            out.append((ann, rle, cls))
    return out


def _paint_order(usable: list[tuple[dict, dict, int]]) -> list[int]:
    """Indices of ``usable`` by decreasing pixel area; ties keep the JSON order."""
    areas = [int(mask_utils.area(rle)) for _, rle, _ in usable]
    return sorted(range(len(usable)), key=lambda i: -areas[i])


def _check_classes(coco: COCO, definition: Any, ann_file: Path) -> None:
    n = len(coco.cats) + 1
    if definition.num_classes != n:
        names = ", ".join(category_names(coco)[:6])
        raise SeglabError(
            f"{ann_file} has {n - 1} categories ({n} classes with background) but "
            f"{definition.num_classes} classes are declared; set data.classes to background + "
            f"the JSON's category names in id order ({names}, ...)"
        )


def read_mask(item: Item, definition: Any) -> np.ndarray:
    """H x W uint8 semantic mask of COCO image ``item.ref``: 0 background, 1..K categories,
    ``definition.ignore_index`` on crowd regions; larger annotations painted first."""
    coco = load_coco(item.mask)
    _check_classes(coco, definition, Path(item.mask))
    h, w = _image_size(coco, item.ref, item.image)
    usable = _image_annotations(coco, item.ref, h, w, Counter())
    mask = np.zeros((h, w), dtype=np.uint8)
    for i in _paint_order(usable):
        ann, rle, cls = usable[i]
        m = mask_utils.decode(rle).astype(bool)
        mask[m] = definition.ignore_index if ann.get("iscrowd") else cls
    return mask


def read_instances(item: Item, definition: Any = None) -> np.ndarray:
    """H x W int32 instance map of COCO image ``item.ref``: 0 background, 1..N one id per
    non-crowd annotation with a non-empty mask, numbered in the JSON's order."""
    coco = load_coco(item.mask)
    h, w = _image_size(coco, item.ref, item.image)
    usable = [
        u for u in _image_annotations(coco, item.ref, h, w, Counter()) if not u[0].get("iscrowd")
    ]
    inst = np.zeros((h, w), dtype=np.int32)
    for i in _paint_order(usable):
        inst[mask_utils.decode(usable[i][1]).astype(bool)] = i + 1
    return inst


def annotation_problems(root: Path, split: str, spec: str | None = None) -> dict[str, int]:
    """How many annotations of ``split`` are bad, per kind (see :data:`PROBLEM_KINDS`).

    Rasterises every annotation (as training would), so it takes a while on full COCO."""
    root = Path(root)
    ann_file = _annotation_file(root, split, spec)
    coco = load_coco(ann_file)
    problems: Counter = Counter(missing_key=coco.missing_keys)
    for image_id in coco.imgs:
        try:
            h, w = _image_size(coco, image_id, None)
        except SeglabError:
            problems["bad_segmentation"] += len(coco.imgToAnns.get(image_id, []))
            continue
        _image_annotations(coco, image_id, h, w, problems)
    return {k: int(problems[k]) for k in PROBLEM_KINDS}
