"""The folder layout's mask encodings (index, 0/255 binary, RGB colour codes with colours from
the config, classes.csv or classes.json) and image formats (PNG, JPEG, WebP, BMP, GIF, 16-bit
PNG/TIFF, 5-channel TIFF)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from seglab.config import DataConfig
from seglab.data import io
from seglab.data.dataset import DatasetDefinition, SegDataset
from seglab.data.formats import Item, folder
from seglab.data.imageio_ext import read_image_any
from seglab.errors import SeglabError

H, W = 12, 16
RNG = np.random.default_rng(0)


def definition(root: Path, classes: list[str], **kw) -> DatasetDefinition:
    return DatasetDefinition.from_config(
        DataConfig(format="folder", root=root, classes=classes, **kw)
    )


def write_rgb(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))
    return path


def write_grey(path: Path, m: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), m)
    return path


def item(path: Path) -> Item:
    return Item(path.parent / "img.png", path)


# ------------------------------------------------------------------------ index masks


def test_index_mask_is_read_unchanged(tmp_path):
    m = RNG.integers(0, 3, (H, W)).astype(np.uint8)
    m[0, :4] = 255
    p = write_grey(tmp_path / "masks" / "a.png", m)
    out = folder.read_mask(item(p), definition(tmp_path, ["a", "b", "c"]))
    assert out.dtype == np.uint8 and out.shape == (H, W)
    np.testing.assert_array_equal(out, m)


def test_grey_mask_stored_as_rgb_is_an_index_mask(tmp_path):
    m = RNG.integers(0, 3, (H, W)).astype(np.uint8)
    p = write_rgb(tmp_path / "masks" / "a.png", np.repeat(m[..., None], 3, axis=2))
    np.testing.assert_array_equal(folder.read_mask(item(p), definition(tmp_path, list("abc"))), m)


def test_16bit_index_mask(tmp_path):
    m = RNG.integers(0, 3, (H, W)).astype(np.uint16)
    p = write_grey(tmp_path / "masks" / "a.png", m)
    out = folder.read_mask(item(p), definition(tmp_path, list("abc")))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, m)
    write_grey(p, np.full((H, W), 300, np.uint16))
    with pytest.raises(SeglabError, match="above 255"):
        folder.read_mask(item(p), definition(tmp_path, list("abc")))


# ------------------------------------------------------------------------ binary 0/255


@pytest.mark.parametrize("ignore", [255, 7])
def test_binary_0_255_mask_becomes_0_1(tmp_path, ignore):
    fg = RNG.random((H, W)) > 0.5
    p = write_grey(tmp_path / "masks" / "a.png", np.where(fg, 255, 0).astype(np.uint8))
    d = definition(tmp_path, ["bg", "fg"], ignore_index=ignore)
    np.testing.assert_array_equal(folder.read_mask(item(p), d), fg.astype(np.uint8))


def test_binary_rule_needs_two_classes_and_only_0_255(tmp_path):
    m = np.where(RNG.random((H, W)) > 0.5, 255, 0).astype(np.uint8)
    p = write_grey(tmp_path / "masks" / "a.png", m)
    # three classes: 255 stays (ignore)
    np.testing.assert_array_equal(folder.read_mask(item(p), definition(tmp_path, list("abc"))), m)
    # anti-aliased 0/255 mask: not converted, left for check_mask to report
    m2 = m.copy()
    m2[0, 0] = 128
    write_grey(p, m2)
    out = folder.read_mask(item(p), definition(tmp_path, ["bg", "fg"]))
    np.testing.assert_array_equal(out, m2)
    with pytest.raises(SeglabError, match="128, 255"):
        io.check_mask(out, out.shape, 2, 254, p, "img.png")


def test_0_1_255_with_ignore_255_is_index_with_ignore(tmp_path):
    m = RNG.integers(0, 2, (H, W)).astype(np.uint8)
    m[:2] = 255
    p = write_grey(tmp_path / "masks" / "a.png", m)
    np.testing.assert_array_equal(folder.read_mask(item(p), definition(tmp_path, ["b", "f"])), m)


def test_0_1_255_with_other_ignore_is_ambiguous(tmp_path):
    m = RNG.integers(0, 2, (H, W)).astype(np.uint8)
    m[:2] = 255
    p = write_grey(tmp_path / "masks" / "a.png", m)
    with pytest.raises(SeglabError, match=r"a\.png holds 0, 1 and 255 but data\.ignore_index"):
        folder.read_mask(item(p), definition(tmp_path, ["b", "f"], ignore_index=9))


# ------------------------------------------------------------------------ colour masks

COLORS = [(0, 0, 0), (128, 64, 128), (250, 170, 30)]
NAMES = ["void", "road", "sign"]


def colour_mask(tmp_path: Path) -> tuple[Path, np.ndarray]:
    idx = RNG.integers(0, 3, (H, W)).astype(np.uint8)
    rgb = np.array(COLORS, np.uint8)[idx]
    return write_rgb(tmp_path / "masks" / "a.png", rgb), idx


def test_colour_mask_with_definition_colours(tmp_path):
    p, idx = colour_mask(tmp_path)
    d = definition(tmp_path, NAMES, colors=COLORS)
    np.testing.assert_array_equal(folder.read_mask(item(p), d), idx)


def test_colour_mask_with_classes_csv(tmp_path):
    p, idx = colour_mask(tmp_path)
    rows = ["name,r,g,b"] + [f"{n},{r},{g},{b}" for n, (r, g, b) in zip(NAMES, COLORS, strict=True)]
    (tmp_path / "classes.csv").write_text("\n".join(rows) + "\n")
    assert folder.classes_from_root(tmp_path) == (NAMES, COLORS)
    # the root's classes.csv names the colours, whatever data.colors says
    d = definition(tmp_path, NAMES, colors=[(1, 1, 1), (2, 2, 2), (3, 3, 3)])
    np.testing.assert_array_equal(folder.read_mask(item(p), d), idx)


def test_classes_come_from_classes_csv_when_config_has_none(tmp_path):
    rows = [f"{n},{r},{g},{b}" for n, (r, g, b) in zip(NAMES, COLORS, strict=True)]
    (tmp_path / "classes.csv").write_text("\n".join(rows) + "\nignore,255,255,255\n")
    assert folder.dataset_classes(tmp_path) == NAMES
    d = DatasetDefinition.from_config(DataConfig(format="folder", root=tmp_path))
    assert d.classes == NAMES
    assert folder.dataset_classes(tmp_path / "none") == []


def test_colour_mask_with_classes_json_and_ignore_colour(tmp_path):
    idx = RNG.integers(0, 3, (H, W)).astype(np.uint8)
    rgb = np.array(COLORS, np.uint8)[idx]
    rgb[0, :3] = (255, 255, 255)
    p = write_rgb(tmp_path / "masks" / "a.png", rgb)
    entries = [{"name": n, "color": list(c)} for n, c in zip(NAMES, COLORS, strict=True)]
    entries.append({"name": "ignore", "color": [255, 255, 255]})
    (tmp_path / "classes.json").write_text(json.dumps(entries))
    assert folder.classes_from_root(tmp_path) == (NAMES, COLORS)
    # classes in another order than the file: mapped by name
    d = definition(tmp_path, ["sign", "void", "road"], ignore_index=200)
    expected = np.array([1, 2, 0], np.uint8)[idx]
    expected[0, :3] = 200
    np.testing.assert_array_equal(folder.read_mask(item(p), d), expected)


def test_unknown_colour_names_file_colour_and_count(tmp_path):
    p, _ = colour_mask(tmp_path)
    rgb = cv2.imread(str(p))[..., ::-1].copy()
    rgb[0, :5] = (10, 20, 30)
    rgb[1, :2] = (1, 2, 3)
    write_rgb(p, rgb)
    with pytest.raises(folder.UnknownColorError) as e:
        folder.read_mask(item(p), definition(tmp_path, NAMES, colors=COLORS))
    msg = str(e.value)
    assert str(p) in msg and "(10,20,30) on 5 pixels" in msg and "(1,2,3) on 2 pixels" in msg
    assert isinstance(e.value, SeglabError) and "\n" not in msg


def write_palette(path: Path, idx: np.ndarray, colours: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.frombytes("P", idx.shape[::-1], np.ascontiguousarray(idx).tobytes())
    im.putpalette([v for c in colours for v in c] + [0, 0, 0] * (256 - len(colours)))
    im.save(path)
    return path


def test_palette_mask_gives_its_indices(tmp_path):
    """labelme's label.png and VOC's masks are palette PNGs; OpenCV alone would expand them to
    colours, which data.colors need not hold (index 0 is black here, no class colour)."""
    idx = RNG.integers(0, 2, (H, W)).astype(np.uint8)
    idx[0, 0], idx[0, 1] = 1, 255  # a 255 (VOC's border) is ignored, not class 1
    palette = [(0, 0, 0), (128, 0, 0)] + [(9, 9, 9)] * 253 + [(224, 224, 192)]
    p = write_palette(tmp_path / "masks" / "a.png", idx, palette)
    d = definition(tmp_path, ["background", "cat"], colors=[(1, 2, 3), (4, 5, 6)])
    np.testing.assert_array_equal(folder.read_mask(item(p), d), idx)
    # indices that are no classes: the palette's colours are the class colours
    p2 = write_palette(tmp_path / "masks" / "b.png", idx + 7, [(0, 0, 0)] * 7 + COLORS[1:])
    d2 = definition(tmp_path, NAMES, colors=COLORS)
    np.testing.assert_array_equal(folder.read_mask(item(p2), d2), np.where(idx == 255, 0, idx + 1))


def test_palette_mask_with_classes_file_is_read_by_colour(tmp_path):
    idx = RNG.integers(0, 3, (H, W)).astype(np.uint8)
    p = write_palette(tmp_path / "masks" / "a.png", idx, COLORS[::-1])  # other index order
    rows = [f"{n},{r},{g},{b}" for n, (r, g, b) in zip(NAMES, COLORS, strict=True)]
    (tmp_path / "classes.csv").write_text("\n".join(rows) + "\n")
    np.testing.assert_array_equal(folder.read_mask(item(p), definition(tmp_path, NAMES)), 2 - idx)


def test_grey_class_colours_in_a_three_channel_mask(tmp_path):
    """A colour-coded mask that happens to hold only grey colours is still a colour mask."""
    colors = [(0, 0, 0), (128, 128, 128), (64, 0, 128)]
    idx = RNG.integers(0, 2, (H, W)).astype(np.uint8)
    p = write_rgb(tmp_path / "masks" / "a.png", np.array(colors, np.uint8)[idx])
    d = definition(tmp_path, ["void", "sky", "car"], colors=colors)
    np.testing.assert_array_equal(folder.read_mask(item(p), d), idx)


def test_classes_file_errors(tmp_path):
    assert folder.classes_from_root(tmp_path) is None
    (tmp_path / "classes.csv").write_text("road,128,64\n")
    with pytest.raises(SeglabError, match=r"classes\.csv line 1: expected 'name,r,g,b'"):
        folder.classes_from_root(tmp_path)
    (tmp_path / "classes.csv").write_text("road,128,64,300\n")
    with pytest.raises(SeglabError, match="0..255"):
        folder.classes_from_root(tmp_path)
    (tmp_path / "classes.csv").write_text("road,1,2,3\nsky,1,2,3\n")
    with pytest.raises(SeglabError, match="share the colour"):
        folder.classes_from_root(tmp_path)
    (tmp_path / "classes.csv").write_text("road,1,2,3\nsky,4,5,6\n")
    (tmp_path / "classes.json").write_text("[]")
    with pytest.raises(SeglabError, match="both classes.csv and classes.json"):
        folder.classes_from_root(tmp_path)
    (tmp_path / "classes.json").unlink()
    p, _ = colour_mask(tmp_path)
    with pytest.raises(SeglabError, match="lists class 'road' which is not in data.classes"):
        folder.read_mask(item(p), definition(tmp_path, ["a", "b"]))


# ------------------------------------------------------------------------ image formats


def _formats(tmp_path: Path) -> dict[str, tuple[Path, np.ndarray, bool]]:
    """name -> (file, expected H x W x C uint8, exact)."""
    rgb = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
    g16 = RNG.integers(0, 65536, (H, W), dtype=np.uint16)
    c5 = RNG.integers(0, 256, (H, W, 5), dtype=np.uint8)
    d = tmp_path / "images"
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    write_rgb(d / "png.png", rgb)
    out["png"] = (d / "png.png", rgb, True)
    # JPEG: a smooth image with distinct channels (R ramps along x, G along y, B constant)
    yy, xx = np.mgrid[0:H, 0:W]
    smooth = np.stack([xx * 255 // (W - 1), yy * 255 // (H - 1), np.full_like(xx, 40)], -1)
    smooth = smooth.astype(np.uint8)
    write_rgb(d / "jpeg.jpg", smooth)
    out["jpeg"] = (d / "jpeg.jpg", smooth, False)
    Image.fromarray(rgb).save(d / "webp.webp", lossless=True)
    out["webp"] = (d / "webp.webp", rgb, True)
    Image.fromarray(rgb).save(d / "bmp.bmp")
    out["bmp"] = (d / "bmp.bmp", rgb, True)
    # a 2-frame GIF of few colours (exact through the palette): the first frame is read
    few = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)[RNG.integers(0, 3, (H, W))]
    frames = [Image.fromarray(few), Image.fromarray(255 - few)]
    frames[0].save(d / "gif.gif", save_all=True, append_images=frames[1:])
    out["gif"] = (d / "gif.gif", few, True)
    write_grey(d / "png16.png", g16)
    out["png16"] = (d / "png16.png", (g16 >> 8).astype(np.uint8)[..., None], True)
    tifffile.imwrite(d / "tif16.tif", g16)
    out["tif16"] = (d / "tif16.tif", (g16 >> 8).astype(np.uint8)[..., None], True)
    tifffile.imwrite(d / "tif5.tif", c5, photometric="minisblack", planarconfig="contig")
    out["tif5"] = (d / "tif5.tif", c5, True)
    return out


def test_read_image_any_every_format(tmp_path):
    for name, (path, expected, exact) in _formats(tmp_path).items():
        img = read_image_any(path)
        assert img.dtype == np.uint8 and img.shape == expected.shape, name
        if exact:
            np.testing.assert_array_equal(img, expected, err_msg=name)
        else:
            assert np.abs(img.astype(int) - expected).mean() < 8, name


@pytest.mark.parametrize("suffix", [".jpg", ".webp"])
def test_exif_orientation_is_applied(tmp_path, suffix):
    """Phone photos store portrait pictures as landscape pixels plus an EXIF orientation tag:
    the image is read upright, as Pillow's exif_transpose (and viewers, labelling tools) show
    it, for each of the 8 orientations."""
    from PIL import ImageOps

    pixels = np.zeros((48, 80, 3), np.uint8)  # blocks, so lossy coding keeps the layout
    pixels[:16, :40] = (250, 0, 0)
    pixels[16:, 40:] = (0, 0, 250)
    pixels[:, 70:, 1] = 250
    for orientation in range(1, 9):
        path = tmp_path / f"o{orientation}{suffix}"
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.fromarray(pixels).save(path, exif=exif, quality=95)
        with Image.open(path) as im:
            upright = np.asarray(ImageOps.exif_transpose(im).convert("RGB")).astype(int)
        img = read_image_any(path)
        assert img.shape == upright.shape, orientation
        assert np.abs(img.astype(int) - upright).mean() < 4, orientation
        if orientation in (5, 6, 7, 8):
            assert img.shape[:2] == (80, 48)


def test_read_image_any_tiff_channel_layouts(tmp_path):
    c5 = RNG.integers(0, 256, (5, H, W), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "pages.tif", c5)  # one page per channel (axes QYX)
    tifffile.imwrite(tmp_path / "planar.tif", c5, planarconfig="separate", photometric="minisblack")
    tifffile.imwrite(tmp_path / "ij.tif", c5, imagej=True, metadata={"axes": "CYX"})
    for name in ("pages", "planar", "ij"):
        np.testing.assert_array_equal(
            read_image_any(tmp_path / f"{name}.tif"), np.moveaxis(c5, 0, -1), err_msg=name
        )
    rgb16 = RNG.integers(0, 65536, (H, W, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "rgb16.tif", rgb16, photometric="rgb")
    np.testing.assert_array_equal(read_image_any(tmp_path / "rgb16.tif"), rgb16 >> 8)
    tifffile.imwrite(tmp_path / "z.tif", RNG.integers(0, 9, (3, 4, H, W), dtype=np.uint8))
    with pytest.raises(SeglabError, match=r"z\.tif is a TIFF stack"):
        read_image_any(tmp_path / "z.tif")


def test_read_image_any_errors(tmp_path):
    with pytest.raises(SeglabError, match="is missing"):
        read_image_any(tmp_path / "nope.png")
    for name in ("bad.png", "bad.gif", "bad.tif"):
        (tmp_path / name).write_bytes(b"not an image at all")
        with pytest.raises(SeglabError, match=rf"{name} cannot be decoded"):
            read_image_any(tmp_path / name)


def test_folder_dataset_reads_every_format(tmp_path):
    """All 3-channel-compatible formats in one folder data set (GIF listed too), through
    SegDataset; the 5-channel TIFF in a data set of its own with in_channels 5."""
    formats = _formats(tmp_path)
    mask = RNG.integers(0, 2, (H, W)).astype(np.uint8)
    five = tmp_path / "five"
    (five / "images").mkdir(parents=True)
    (tmp_path / "images" / "tif5.tif").rename(five / "images" / "tif5.tif")
    write_grey(five / "masks" / "tif5.png", mask)
    for name in formats:
        write_grey(tmp_path / "masks" / f"{name}.png", mask)
    (tmp_path / "masks" / "tif5.png").unlink()
    ds = SegDataset(definition(tmp_path, ["bg", "fg"]), "train")
    stems = [it.image.stem for it in ds.pairs]
    assert sorted(stems) == sorted(set(formats) - {"tif5"})
    for i, stem in enumerate(stems):
        s = ds[i]
        assert s["image"].shape == (3, H, W) and s["image"].dtype == torch.uint8, stem
        assert s["mask"].tolist() == mask.tolist(), stem
        if stem in ("png", "webp", "bmp", "gif"):
            assert s["image"].permute(1, 2, 0).numpy().tolist() == formats[stem][1].tolist()
    if "read_image_any" not in inspect.getsource(io.read_image):
        pytest.skip(
            "io.read_image (OpenCV) cannot decode 5-channel TIFF until it calls "
            "imageio_ext.read_image_any"
        )
    img, m = SegDataset(definition(five, ["bg", "fg"], in_channels=5), "train").load(0)
    np.testing.assert_array_equal(img, formats["tif5"][1])
    np.testing.assert_array_equal(m, mask)


def test_list_split_still_raises_on_shared_stems(tmp_path):
    write_rgb(tmp_path / "images" / "a.png", np.zeros((H, W, 3), np.uint8))
    write_rgb(tmp_path / "images" / "a.jpg", np.zeros((H, W, 3), np.uint8))
    with pytest.raises(SeglabError, match="share the stem 'a'"):
        folder.list_split(tmp_path, "train")
    (tmp_path / "images" / "a.jpg").unlink()
    (tmp_path / "val.txt").write_text("b\n")
    with pytest.raises(SeglabError, match=r"val\.txt: no image with stem 'b'"):
        folder.list_split(tmp_path, "val")
    assert folder.list_split(tmp_path, "test") == []
    [it] = folder.list_split(tmp_path, "train")
    assert it == Item(tmp_path / "images" / "a.png", None)  # no masks at all: unlabelled
    write_rgb(tmp_path / "images" / "c.png", np.zeros((H, W, 3), np.uint8))
    (tmp_path / "masks").mkdir()
    cv2.imwrite(str(tmp_path / "masks" / "c.png"), np.zeros((H, W), np.uint8))
    a, c = folder.list_split(tmp_path, "train")  # labelled, a's mask missing: named
    assert a == Item(tmp_path / "images" / "a.png", tmp_path / "masks" / "a.png")


def test_split_list_stems_may_hold_dots(tmp_path):
    """``seglab data split`` writes stems without a suffix: ``frame.0001`` is a stem, not
    ``frame`` with the suffix ``.0001``; ``b.png`` in a list still names the stem ``b``."""
    for stem in ("frame.0001", "frame.0002", "b"):
        write_rgb(tmp_path / "images" / f"{stem}.png", np.zeros((H, W, 3), np.uint8))
    (tmp_path / "train.txt").write_text("frame.0001\nframe.0002\n")
    (tmp_path / "val.txt").write_text("b.png\n")
    assert [it.image.name for it in folder.list_split(tmp_path, "train")] == [
        "frame.0001.png",
        "frame.0002.png",
    ]
    assert [it.image.name for it in folder.list_split(tmp_path, "val")] == ["b.png"]


def test_train_without_a_list_leaves_out_val_and_test_images(tmp_path):
    """With val.txt / test.txt but no train.txt, train is the other images: validation and
    test images must not leak into training (their scores would be inflated)."""
    for stem in "abcd":
        write_rgb(tmp_path / "images" / f"{stem}.png", np.zeros((H, W, 3), np.uint8))
    (tmp_path / "val.txt").write_text("c\n")
    (tmp_path / "test.txt").write_text("d.png\n")
    assert [it.image.stem for it in folder.list_split(tmp_path, "train")] == ["a", "b"]
    assert [it.image.stem for it in folder.list_split(tmp_path, "val")] == ["c"]


def test_default_train_split_is_unlabelled_when_only_held_out_images_have_masks(tmp_path):
    """Train is every image not in val.txt/test.txt; whether it is labelled is decided on
    those images, not on the held-out ones."""
    for stem in ("t0", "t1", "v0"):
        write_rgb(tmp_path / "images" / f"{stem}.png", np.zeros((H, W, 3), np.uint8))
    (tmp_path / "masks").mkdir()
    cv2.imwrite(str(tmp_path / "masks" / "v0.png"), np.zeros((H, W), np.uint8))
    (tmp_path / "val.txt").write_text("v0\n")
    assert [it.mask for it in folder.list_split(tmp_path, "train")] == [None, None]
    [v] = folder.list_split(tmp_path, "val")
    assert v.mask == tmp_path / "masks" / "v0.png"
