"""data.coco against an independent pycocotools painting, plus every bad-input case and the CLIs."""
from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest
from pycocotools.coco import COCO

from data.classes import NAME_TO_ID
from data.coco import CocoSegDataset, DataError, main as coco_main, rle_string_counts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------------------------------- fixtures

def _write_img(path: str, arr: np.ndarray, ext: str = ".jpg") -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ok, buf = cv2.imencode(ext, arr)
    assert ok
    with open(path, "wb") as f:
        f.write(buf.tobytes())


def _uncompressed(mask: np.ndarray) -> list[int]:
    flat = mask.ravel(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    counts = np.diff(np.concatenate(([0], change, [flat.size]))).tolist()
    return ([0] + counts) if flat[0] else counts


def _coco(root: str) -> dict:
    """Hand-made COCO: shuffled category ids with mixed-case names, gappy image ids, overlaps, every segm kind."""
    rng = np.random.default_rng(0)
    cats = [{"id": 31, "name": "PAPER"}, {"id": 7, "name": "plastic bag"}, {"id": 2, "name": "Battery"},
            {"id": 40, "name": "General trash"}, {"id": 12, "name": "Clothing"}, {"id": 5, "name": "metal"}]
    images = [
        {"id": 905, "file_name": "batch_01_vt/0001.jpg", "width": 64, "height": 48},
        {"id": 17, "file_name": "batch_01_vt/0002.png", "width": 37, "height": 53},  # grayscale PNG, odd size
        {"id": 3, "file_name": "batch_02_vt/rgba.png", "width": 40, "height": 30},  # RGBA
        {"id": 1000000, "file_name": "batch_03/deep/16bit.png", "width": 33, "height": 21},  # 16-bit
        {"id": 44, "file_name": "batch_03/ünïcode 画像.jpg", "width": 50, "height": 50},  # non-ASCII path
    ]
    _write_img(os.path.join(root, images[0]["file_name"]), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    _write_img(os.path.join(root, images[1]["file_name"]), rng.integers(0, 255, (53, 37), dtype=np.uint8), ".png")
    _write_img(os.path.join(root, images[2]["file_name"]), rng.integers(0, 255, (30, 40, 4), dtype=np.uint8), ".png")
    _write_img(os.path.join(root, images[3]["file_name"]), rng.integers(0, 65535, (21, 33, 3), dtype=np.uint16),
               ".png")
    _write_img(os.path.join(root, images[4]["file_name"]), rng.integers(0, 255, (50, 50, 3), dtype=np.uint8))

    crowd = np.zeros((48, 64), np.uint8)
    crowd[10:30, 20:50] = 1
    crowd[0:5, 0:3] = 1  # a run touching pixel (0, 0): counts start with 0
    rle_mask = np.zeros((53, 37), np.uint8)
    rle_mask[5:40, 3:20] = 1
    rle_c = mask_utils.encode(np.asfortranarray(rle_mask))
    anns = [
        # image 905: listed smallest-first, so file order != painting order
        {"id": 1, "image_id": 905, "category_id": 2, "segmentation": [[30, 15, 40, 15, 40, 25, 30, 25]],
         "area": 100.0, "bbox": [30, 15, 10, 10], "iscrowd": 0},
        {"id": 2, "image_id": 905, "category_id": 7, "segmentation": [[0, 0, 60, 0, 60, 40, 0, 40]],
         "area": 2400.0, "bbox": [0, 0, 60, 40], "iscrowd": 0},
        {"id": 3, "image_id": 905, "category_id": 31,  # multi-polygon, one vertex slightly outside (clipped)
         "segmentation": [[10, 10, 35, 10, 35, 35, 10, 35], [45, 30, 64.8, 30, 64.8, 48.5, 45, 48]],
         "area": 900.0, "bbox": [10, 10, 54.8, 38.5], "iscrowd": 0},
        {"id": 4, "image_id": 905, "category_id": 40,
         "segmentation": {"size": [48, 64], "counts": _uncompressed(crowd)}, "area": float(crowd.sum()),
         "bbox": [0, 0, 50, 30], "iscrowd": 1},
        # equal areas: stable order decides (file order among ties)
        {"id": 5, "image_id": 905, "category_id": 12, "segmentation": [[2, 40, 12, 40, 12, 47, 2, 47]],
         "area": 70.0, "bbox": [2, 40, 10, 7], "iscrowd": 0},
        {"id": 6, "image_id": 905, "category_id": 5, "segmentation": [[5, 42, 15, 42, 15, 47, 5, 47]],
         "area": 70.0, "bbox": [5, 42, 10, 5], "iscrowd": 0},
        # image 17: compressed RLE (string counts) under a triangle
        {"id": 10, "image_id": 17, "category_id": 5,
         "segmentation": {"size": [53, 37], "counts": rle_c["counts"].decode()}, "area": float(rle_mask.sum()),
         "bbox": [3, 5, 17, 35], "iscrowd": 0},
        {"id": 11, "image_id": 17, "category_id": 12, "segmentation": [[0, 0, 36, 20, 0, 52]], "area": 950.0,
         "bbox": [0, 0, 36, 52], "iscrowd": 0},
        {"id": 12, "image_id": 3, "category_id": 31, "segmentation": [[5, 5, 30, 8, 20, 25]], "area": 200.0,
         "bbox": [5, 5, 25, 20], "iscrowd": 0},
        {"id": 13, "image_id": 44, "category_id": 7, "segmentation": [[-1.5, -1, 30, 0, 30, 30, 0, 51]],
         "area": 1000.0, "bbox": [0, 0, 30, 50], "iscrowd": 0},
    ]
    # image 1000000 has no annotations: an all-background mask
    return {"info": {"x": 1}, "licenses": [], "images": images, "annotations": anns, "categories": cats}


@pytest.fixture()
def root(tmp_path):
    r = str(tmp_path / "root")
    os.makedirs(r)
    d = _coco(r)
    _dump(os.path.join(r, "train.json"), d)
    return r


def _dump(path: str, d: dict) -> str:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(d, f, ensure_ascii=False)
    return path


def oracle_masks(json_path: str) -> dict[str, np.ndarray]:
    """Straightforward pycocotools painting: annToMask, annotations sorted by area descending, class by name."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(json_path)
    cls = {c["id"]: NAME_TO_ID[c["name"].lower()] for c in coco.loadCats(coco.getCatIds())}
    out = {}
    for img in coco.loadImgs(coco.getImgIds()):
        m = np.zeros((img["height"], img["width"]), np.uint8)
        for a in sorted(coco.loadAnns(coco.getAnnIds(imgIds=img["id"])), key=lambda a: a["area"], reverse=True):
            m[coco.annToMask(a) > 0] = cls[a["category_id"]]
        out[img["file_name"]] = m
    return out


# -------------------------------------------------------------------------------------------------- painting

def test_masks_equal_pycocotools_oracle(root):
    jp = os.path.join(root, "train.json")
    ds = CocoSegDataset(root, jp)
    want = oracle_masks(jp)
    assert ds.has_labels and len(ds) == 5
    assert ds.image_ids == [im["file_name"] for im in _coco_json(jp)["images"]]
    for i in range(len(ds)):
        item = ds[i]
        assert item["image_id"] == ds.image_ids[i]
        assert item["mask"].dtype == np.uint8 and item["mask"].shape == item["image"].shape[:2]
        np.testing.assert_array_equal(item["mask"], want[item["image_id"]], err_msg=item["image_id"])
    m = ds[0]["mask"]
    # painting order: Battery (smallest) on top of Paper on top of the Plastic bag; the stable tie puts Metal
    # (listed after Clothing, same area) on top where they overlap
    assert m[20, 35] == NAME_TO_ID["battery"] and m[12, 12] == NAME_TO_ID["paper"] and m[38, 55] == NAME_TO_ID["paper"]
    assert m[44, 10] == NAME_TO_ID["metal"] and m[44, 3] == NAME_TO_ID["clothing"]
    assert m[47, 63] == NAME_TO_ID["paper"]  # the polygon slightly outside the image is clipped, not an error
    assert m[1, 1] == NAME_TO_ID["general trash"]  # crowd RLE whose counts start with a 0-run of zeros
    assert set(np.unique(ds[3]["mask"])) == {0}
    # cache: a second read equals the first and equals a fresh uncached dataset
    ds2 = CocoSegDataset(root, jp, cache_masks=False)
    for i in range(len(ds)):
        np.testing.assert_array_equal(ds.load_mask(i), ds2.load_mask(i))


def _coco_json(p):
    with open(p, encoding="utf-8") as f:
        return json.load(f)


def test_image_formats(root):
    ds = CocoSegDataset(root, os.path.join(root, "train.json"))
    for i in range(len(ds)):
        img = ds.load_image(i)
        rec = ds.images[i]
        assert img.dtype == np.uint8 and img.shape == (rec["height"], rec["width"], 3), rec["file_name"]
    gray = ds.load_image(1)
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 0], gray[..., 2])
    raw = cv2.imdecode(np.fromfile(os.path.join(root, "batch_02_vt/rgba.png"), np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(ds.load_image(2), raw[:, :, [2, 1, 0]])  # BGRA → RGB, alpha dropped
    raw16 = cv2.imdecode(np.fromfile(os.path.join(root, "batch_03/deep/16bit.png"), np.uint8), cv2.IMREAD_UNCHANGED)
    assert raw16.dtype == np.uint16
    assert np.abs(ds.load_image(3).astype(int) - (raw16[:, :, ::-1] / 257.0)).max() <= 0.5 + 1e-6


def test_unlabelled_and_concatenation(root, tmp_path):
    d = _coco(root)
    test = {"images": [{"id": 1, "file_name": "batch_03/t.jpg", "width": 20, "height": 10}], "categories": []}
    _write_img(os.path.join(root, "batch_03/t.jpg"), np.zeros((10, 20, 3), np.uint8))
    tj = _dump(os.path.join(root, "test.json"), test)
    ds = CocoSegDataset(root, tj)
    assert not ds.has_labels and ds[0]["mask"] is None and ds[0]["image"].shape == (10, 20, 3)
    # two files: same id space allowed per file, concatenated in order, a file_name twice is an error
    both = CocoSegDataset(root, [os.path.join(root, "train.json"), tj])
    assert len(both) == 6 and both.image_ids[-1] == "batch_03/t.jpg" and not both.has_labels
    assert both[0]["mask"] is not None and both[5]["mask"] is None
    with pytest.raises(DataError, match="duplicate file_name"):
        CocoSegDataset(root, [os.path.join(root, "train.json"), os.path.join(root, "train.json")])


def test_mask_file_and_instances(root):
    jp = os.path.join(root, "train.json")
    ds = CocoSegDataset(root, jp)
    inst = ds.instances(0)
    assert [c for c, _ in inst][0] == NAME_TO_ID["plastic bag"]  # largest first
    # pasting the visible regions in order reproduces the label map on their union
    m = np.zeros_like(ds.load_mask(0))
    for c, im in inst:
        assert im.dtype == bool
        m[im] = c
    np.testing.assert_array_equal(m, ds.load_mask(0))

    label = np.zeros((48, 64), np.uint8)
    label[:10] = 8
    label[10:20, :5] = 3
    label[30:, :] = 255
    os.makedirs(os.path.join(root, "pseudo"))
    cv2.imwrite(os.path.join(root, "pseudo", "a.png"), label)
    d = _coco(root)
    d["images"] = d["images"][:1]
    d["images"][0]["mask_file"] = "pseudo/a.png"  # relative to the JSON's directory
    d.pop("annotations")
    jp2 = _dump(os.path.join(root, "pseudo.json"), d)
    ds = CocoSegDataset(root, jp2)
    assert ds.has_labels
    np.testing.assert_array_equal(ds[0]["mask"], label)
    assert [(c, int(im.sum())) for c, im in ds.instances(0)] == [(8, 640), (3, 50)]

    label[0, 0] = 11  # out of range
    cv2.imwrite(os.path.join(root, "pseudo", "a.png"), label)
    with pytest.raises(DataError, match=r"pseudo/a\.png.*values \[11\]"):
        CocoSegDataset(root, jp2, cache_masks=False).load_mask(0)


# ----------------------------------------------------------------------------------------------- bad inputs

def _mutate(d: dict, case: str, root: str) -> tuple[str, str]:
    """Apply one breakage; returns (regex the message must match, what it must name)."""
    a0 = d["annotations"][0]
    if case == "unknown image":
        a0["image_id"] = 424242
        return "image_id 424242 is not in", "annotation id=1"
    if case == "unknown category id":
        a0["category_id"] = 99
        return "category_id 99 is not a known category", "annotation id=1"
    if case == "unknown category name":
        d["categories"][2]["name"] = "Cardboard"
        return "unknown name 'Cardboard'", "category id=2"
    if case == "polygon < 3 points":
        a0["segmentation"] = [[1, 1, 5, 5]]
        return "fewer than 3 points", "annotation id=1"
    if case == "odd coordinates":
        a0["segmentation"] = [[1, 1, 5, 5, 6]]
        return "odd number of coordinates", "annotation id=1"
    if case == "empty segmentation":
        a0["segmentation"] = []
        return "empty segmentation", "annotation id=1"
    if case == "bbox outside":
        a0["bbox"] = [50, 40, 30, 30]
        return "bbox .* lies outside the 64x48 image", "annotation id=1"
    if case == "polygon far outside":
        a0["segmentation"] = [[30, 15, 140, 15, 40, 25]]
        return "polygon 0 reaches outside", "annotation id=1"
    if case == "area too large":
        a0["area"] = 64 * 48 * 2
        return "area 6144 exceeds the 64x48 image", "annotation id=1"
    if case == "rle size":
        d["annotations"][3]["segmentation"]["size"] = [64, 48]
        return "RLE size 64x48 .* differs from the image's 48x64", "annotation id=4"
    if case == "rle counts":
        d["annotations"][3]["segmentation"]["counts"][-1] += 5
        return "RLE counts sum to", "annotation id=4"
    if case == "rle string":
        d["annotations"][6]["segmentation"]["counts"] = "0;~~~"
        return "RLE", "annotation id=10"
    if case == "duplicate image id":
        d["images"][1]["id"] = 905
        return "duplicate image id", "image id=905"
    if case == "duplicate file name":
        d["images"][1]["file_name"] = "batch_01_vt/0001.jpg"
        return "duplicate file_name", "image id=17"
    if case == "duplicate annotation id":
        d["annotations"][1]["id"] = 1
        return "duplicate annotation id", "annotation id=1"
    if case == "missing image":
        d["images"][1]["file_name"] = "batch_01_vt/nope.png"
        return "image file not found", "image id=17"
    if case == "size disagrees":
        d["images"][0]["width"] = 65
        return "record says 65x48", "image id=905"
    if case == "missing mask_file":
        d["images"][0]["mask_file"] = "nowhere.png"
        return "mask_file not found", "image id=905"
    raise AssertionError(case)


BAD_CASES = ["unknown image", "unknown category id", "unknown category name", "polygon < 3 points",
             "odd coordinates", "empty segmentation", "bbox outside", "polygon far outside", "area too large", "rle size",
             "rle counts", "rle string", "duplicate image id", "duplicate file name", "duplicate annotation id",
             "missing image", "size disagrees", "missing mask_file"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_named(root, case):
    d = _coco(root)
    pattern, names = _mutate(d, case, root)
    jp = _dump(os.path.join(root, "bad.json"), d)
    with pytest.raises(DataError) as ei:
        CocoSegDataset(root, jp)
    msg = str(ei.value)
    assert "\n" not in msg and jp in msg and names in msg, msg
    assert re.search(pattern, msg), msg
    # and --skip-invalid turns it into listed skips: one, except that the renumbered duplicate image also orphans
    # the two annotations of its old id
    ds = CocoSegDataset(root, jp, skip_invalid=True)
    assert len(ds.skipped) == (3 if case == "duplicate image id" else 1), ds.skipped
    assert (names if case != "unknown category name" else "'Cardboard'") in ds.skipped[0]


def test_json_problems(tmp_path):
    with pytest.raises(DataError, match=r"missing\.json: file not found"):
        CocoSegDataset(str(tmp_path), str(tmp_path / "missing.json"))
    p = tmp_path / "broken.json"
    p.write_text('{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(DataError, match=r"broken\.json: malformed JSON at line 2 column 12"):
        CocoSegDataset(str(tmp_path), str(p))
    p.write_text('[1, 2]')
    with pytest.raises(DataError, match="top level must be a JSON object"):
        CocoSegDataset(str(tmp_path), str(p))


def test_corrupt_images(root):
    d = _coco(root)
    with open(os.path.join(root, "batch_01_vt/0002.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\nthis is not an image")
    good = open(os.path.join(root, "batch_01_vt/0001.jpg"), "rb").read()
    with open(os.path.join(root, "batch_01_vt/0001.jpg"), "wb") as f:
        f.write(good[: len(good) // 2])  # truncated JPEG: libjpeg would pad it with grey and only warn
    jp = _dump(os.path.join(root, "c.json"), d)
    ds = CocoSegDataset(root, jp)  # JSON-level checks pass; decoding fails on access
    with pytest.raises(DataError, match=r"image id=905 .*truncated JPEG"):
        ds[0]
    with pytest.raises(DataError, match=r"image id=17 .*corrupt image"):
        ds.load_image(1)
    with pytest.raises(DataError, match="truncated JPEG"):
        CocoSegDataset(root, jp, verify_images=True)
    ds = CocoSegDataset(root, jp, skip_invalid=True)  # verifies by default when skipping
    assert len(ds) == 3 and len(ds.skipped) == 2
    assert "0001.jpg" not in ds.image_ids and "batch_02_vt/rgba.png" in ds.image_ids


def test_skip_invalid_counts_and_keeps_the_rest(root, capsys):
    d = _coco(root)
    d["images"][2]["file_name"] = "batch_02_vt/gone.png"  # image skipped: its annotation goes silently with it
    d["annotations"][0]["segmentation"] = [[1, 2]]  # the battery: annotation skipped
    d["annotations"][7]["category_id"] = 1234  # image 17's triangle: annotation skipped
    jp = _dump(os.path.join(root, "s.json"), d)
    ds = CocoSegDataset(root, jp, skip_invalid=True)
    assert len(ds) == 4 and len(ds.skipped) == 3
    ds.report_skips()
    err = capsys.readouterr().err
    assert err.startswith("skipped 3 invalid input(s):") and "gone.png" in err and "annotation id=11" in err
    # the remaining labels equal the oracle on the file without the skipped parts
    d2 = copy.deepcopy(d)
    d2["images"].pop(2)
    d2["annotations"] = [a for a in d2["annotations"] if a["id"] not in (1, 11, 12)]
    want = oracle_masks(_dump(os.path.join(root, "s2.json"), d2))
    for i in range(len(ds)):
        np.testing.assert_array_equal(ds.load_mask(i), want[ds.image_ids[i]])


def test_rle_string_decoder_matches_pycocotools():
    rng = np.random.default_rng(1)
    for _ in range(20):
        m = (rng.random((17, 23)) < rng.random()).astype(np.uint8)
        rle = mask_utils.encode(np.asfortranarray(m))
        counts = rle_string_counts(rle["counts"])
        assert sum(counts) == m.size and counts == _uncompressed(m)


# ------------------------------------------------------------------------------------------------------ CLIs

def test_cli_masks_and_stats(root, tmp_path, capsys):
    jp = os.path.join(root, "train.json")
    out = str(tmp_path / "masks")
    assert coco_main(["masks", "--data-root", root, "--json", jp, "--out", out]) == 0
    want = oracle_masks(jp)
    for fn, m in want.items():
        path = os.path.join(out, os.path.splitext(fn)[0] + ".png")
        got = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
        assert got.ndim == 2 and got.dtype == np.uint8
        np.testing.assert_array_equal(got, m, err_msg=fn)
    leftovers = [f for _, _, fs in os.walk(out) for f in fs if f.endswith(".tmp")]
    assert not leftovers
    capsys.readouterr()
    assert coco_main(["stats", "--data-root", root, "--json", jp]) == 0
    text = capsys.readouterr().out
    assert "Plastic bag" in text and "64x48" in text and "Clothing" in text
    line = next(ln for ln in text.splitlines() if "Battery" in ln)
    assert line.split()[2] == "1"  # one Battery annotation


def test_stats_have_one_definition(tmp_path, capsys):
    """`data.coco stats` prints data.stats.dataset_stats, which the report's data section shows too: an object hidden
    under another counts as an annotation and puts its class in the image; its pixels go to the class on top."""
    from data.stats import dataset_stats
    root = str(tmp_path / "root")
    _write_img(os.path.join(root, "a.jpg"), np.zeros((20, 20, 3), np.uint8))
    _write_img(os.path.join(root, "b.jpg"), np.zeros((20, 20, 3), np.uint8))
    box = lambda x0, x1: [[x0, x0, x1, x0, x1, x1, x0, x1]]  # noqa: E731
    anns = [  # the Battery's recorded area puts it first in painting order: the Paper covers it entirely
        {"id": 1, "image_id": 1, "category_id": 9, "segmentation": box(5, 10), "area": 300.0, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 2, "segmentation": box(0, 20), "area": 200.0, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 2, "segmentation": box(0, 10), "area": 100.0, "iscrowd": 0}]
    d = {"images": [{"id": 1, "file_name": "a.jpg", "width": 20, "height": 20},
                    {"id": 2, "file_name": "b.jpg"}],  # no width/height: taken from the file
         "annotations": anns, "categories": [{"id": 2, "name": "Paper"}, {"id": 9, "name": "Battery"}]}
    jp = _dump(os.path.join(root, "t.json"), d)
    st = dataset_stats(CocoSegDataset(root, jp))
    assert st.ann_count[9] == 1 and st.images_with[9] == 1 and st.pixels[9] == 0
    assert st.ann_count[2] == 2 and st.images_with[2] == 2 and st.pixels[2] == 400 + 100
    assert st.sizes == {(20, 20): 2} and st.classes == [[2, 9], [2]] and st.objects == [2, 1]
    capsys.readouterr()
    assert coco_main(["stats", "--data-root", root, "--json", jp]) == 0
    rows = {ln.split()[0]: ln.split() for ln in capsys.readouterr().out.splitlines() if ln[:3].strip().isdigit()}
    assert rows["9"][1:] == ["Battery", "1", "0.00", "1", "50.0"]  # annotations, pixel %, images, image %
    assert rows["2"][1:] == ["Paper", "2", "62.50", "2", "100.0"]


def test_cli_masks_stay_in_out_and_refuse_shared_files(tmp_path):
    """'..' in a file_name must not write outside --out; a.jpg and a.png must not share (overwrite) one mask."""
    root = str(tmp_path / "root")
    rng = np.random.default_rng(1)
    for rel in ("a.jpg", "a.png", "../outside/b.jpg"):
        _write_img(os.path.join(root, rel), rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), os.path.splitext(rel)[1])
    poly = [[1, 1, 6, 1, 6, 6, 1, 6]]
    d = {"images": [{"id": i, "file_name": fn, "width": 8, "height": 8}
                    for i, fn in enumerate(("a.jpg", "../outside/b.jpg"))],
         "annotations": [{"id": i, "image_id": i, "category_id": 1, "segmentation": poly, "area": 25.0,
                          "bbox": [1, 1, 5, 5], "iscrowd": 0} for i in range(2)],
         "categories": [{"id": 1, "name": "Paper"}]}
    jp = _dump(os.path.join(root, "x.json"), d)
    out = str(tmp_path / "masks")
    assert coco_main(["masks", "--data-root", root, "--json", jp, "--out", out]) == 0
    written = sorted(os.path.relpath(os.path.join(dp, f), out) for dp, _, fs in os.walk(out) for f in fs)
    assert written == ["a.png", os.path.join("outside", "b.png")]
    assert not os.path.exists(tmp_path / "outside" / "b.png")
    d["images"][1]["file_name"] = "a.png"
    jp = _dump(os.path.join(root, "clash.json"), d)
    with pytest.raises(SystemExit, match="would share one mask file"):
        coco_main(["masks", "--data-root", root, "--json", jp, "--out", str(tmp_path / "m2")])


def test_cli_exit_code_2(root, tmp_path):
    d = _coco(root)
    d["annotations"][2]["category_id"] = 77
    jp = _dump(os.path.join(root, "bad.json"), d)
    env = dict(os.environ, PYTHONPATH=ROOT)
    for args in (["masks", "--data-root", root, "--json", jp, "--out", str(tmp_path / "o")],
                 ["stats", "--data-root", root, "--json", str(tmp_path / "absent.json")]):
        r = subprocess.run([sys.executable, "-m", "data.coco", *args], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "annotation id=3" in subprocess.run(
        [sys.executable, "-m", "data.coco", "masks", "--data-root", root, "--json", jp, "--out", str(tmp_path / "o")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120).stderr
    # --skip-invalid: exit 0, the skip listed at the end, the other masks written
    r = subprocess.run([sys.executable, "-m", "data.coco", "masks", "--data-root", root, "--json", jp, "--out",
                        str(tmp_path / "o"), "--skip-invalid"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "skipped 1 invalid input(s)" in r.stderr and "annotation id=3" in r.stderr
    assert os.path.exists(tmp_path / "o" / "batch_01_vt" / "0001.png")
