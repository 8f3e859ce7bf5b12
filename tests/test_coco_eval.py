"""COCO evaluation: pycocotools' numbers on the shared fixtures (expected.json) and on random cases."""

import contextlib
import copy
import gzip
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from yoloseg.metrics import coco_evaluate
from yoloseg.metrics import rle

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "cocoeval"
CASES = ["small_s0", "medium_s0", "edge_s0"]
TOL = 1e-9


def _paths(case):
    d = FIXTURES / case
    if not d.is_dir():
        pytest.skip(f"fixture {case} not found")
    gt = d / "gt.json" if (d / "gt.json").is_file() else d / "gt.json.gz"
    dt = d / "dt.json" if (d / "dt.json").is_file() else d / "dt.json.gz"
    return gt, dt, json.loads((d / "expected.json").read_text())


def _load(path):
    raw = Path(path).read_bytes()
    return json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)


def _check(res, exp):
    assert len(res.stats) == 12
    for ours, ref in zip(res.stats, exp["stats"]):
        assert abs(ours - ref) <= TOL
    per = exp["per_category"]
    assert sorted(int(c) for c in per) == sorted(res.per_class)
    for c, v in per.items():
        for key, got in (("ap", res.per_class), ("ap50", res.per_class_ap50), ("ap75", res.per_class_ap75)):
            if v[key] is None:
                assert got[int(c)] is None
            else:
                assert got[int(c)] is not None and abs(got[int(c)] - v[key]) <= TOL


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("variant", ["bbox", "segm"])
def test_fixture_paths(case, variant):
    gt, dt, exp = _paths(case)
    res = coco_evaluate(gt, dt, variant)
    _check(res, exp[variant])
    assert res.precision.shape == (10, 101, len(res.cat_ids), 4, 3)
    assert res.recall.shape == (10, len(res.cat_ids), 4, 3)


@pytest.mark.parametrize("case", CASES)
def test_fixture_segm_mask_area(case):
    gt, dt, exp = _paths(case)
    dts = _load(dt)
    for d in dts:
        d.pop("bbox")
    _check(coco_evaluate(_load(gt), dts, "segm"), exp["segm_mask_area"])


def test_inputs_as_objects_equal_paths():
    gt, dt, exp = _paths("small_s0")
    a = coco_evaluate(gt, dt, "segm")
    b = coco_evaluate(_load(gt), _load(dt), "segm", num_threads=1)
    assert a.stats == b.stats
    assert np.array_equal(a.precision, b.precision)
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in a.summary()
    assert len(a.summary().splitlines()) == 12


def test_bad_input():
    gt, dt, _ = _paths("small_s0")
    g, d = _load(gt), _load(dt)
    with pytest.raises(ValueError, match="iou_type"):
        coco_evaluate(g, d, "keypoints")
    with pytest.raises(FileNotFoundError):
        coco_evaluate(gt.parent / "missing.json", d)
    bad = copy.deepcopy(d[:50])
    bad[3]["score"] = float("nan")
    with pytest.raises(ValueError, match="score"):
        coco_evaluate(g, bad)
    bad = copy.deepcopy(d[:50])
    bad[4]["image_id"] = -12345
    with pytest.raises(ValueError, match="not in gt images"):
        coco_evaluate(g, bad)
    bad = copy.deepcopy(d[:50])
    bad[5]["bbox"] = [1, 2, float("nan"), 3]
    with pytest.raises(ValueError, match="bbox"):
        coco_evaluate(g, bad)
    with pytest.raises(ValueError):
        coco_evaluate({"annotations": []}, d)
    with pytest.raises(ValueError):
        coco_evaluate(g, {"not": "a list"})


def test_empty_and_degenerate_labels():
    gt, dt, _ = _paths("small_s0")
    g, d = _load(gt), _load(dt)
    # no detections at all: every category with ground truth scores 0, nothing crashes
    r = coco_evaluate(g, [], "segm")
    assert all(s in (0.0, -1.0) for s in r.stats) and r.stats[0] == 0.0
    # no annotations at all: every number is -1 (undefined)
    r = coco_evaluate({**g, "annotations": []}, d, "bbox")
    assert r.stats == [-1.0] * 12 and all(v is None for v in r.per_class.values())
    # polygons with fewer than 3 points, empty polygon lists, empty parts
    g2 = copy.deepcopy(g)
    anns = [a for a in g2["annotations"] if not a["iscrowd"]]
    anns[0]["segmentation"] = [[10.0, 10.0]]
    anns[1]["segmentation"] = [[10.0, 10.0, 20.0, 20.0]]
    anns[2]["segmentation"] = []
    anns[3]["segmentation"] = [anns[3]["segmentation"][0], []]
    r = coco_evaluate(g2, d, "segm")
    assert 0 < r.stats[0] < 1


# ---------------------------------------------------------------------------------------------
# Random cases against pycocotools (exact arrays and stats)


def _star(rng, cx, cy, r, n):
    ang = np.sort(rng.random(n)) * 2 * np.pi
    rad = r * (0.5 + 0.5 * rng.random(n))
    return np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)


def _random_case(seed, with_bbox=True):
    rng = np.random.default_rng(seed)
    cats = sorted(rng.choice(np.arange(1, 30), 5, replace=False).tolist())
    images, anns, dets = [], [], []
    n_img = int(rng.integers(3, 10))
    ids = (rng.choice(10**6, n_img, replace=False) + (2**33 if seed % 2 else 1)).tolist()
    next_ann = 2**40 + int(rng.integers(1000))
    for img_id in ids:
        h, w = (int(v) for v in rng.integers(30, 140, 2))
        images.append({"id": img_id, "height": h, "width": w})
        objs = []
        for _ in range(int(rng.integers(0, 7))):
            cat = int(rng.choice(cats[:4]))
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            r = float(rng.uniform(3, 45))
            poly = _star(rng, cx, cy, r, int(rng.integers(3, 12))).round(2)
            crowd = rng.random() < 0.12
            seg = [poly.ravel().tolist()]
            if rng.random() < 0.15:
                seg.append(_star(rng, cx + r, cy, r / 2, 5).round(2).ravel().tolist())
            if crowd:
                m = rle.from_polygons(seg, h, w)
                seg = m if rng.random() < 0.5 else {"size": [h, w], "counts": rle.counts(m)}
                area = float(rle.area(m))
            else:
                x, y = poly[:, 0], poly[:, 1]
                area = float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)
            if rng.random() < 0.1:
                area = float(rng.choice([32**2, 96**2]))  # inclusive range boundaries
            x0, y0 = poly.min(0)
            x1, y1 = poly.max(0)
            ann_id = next_ann if rng.random() > 0.03 else 0  # id 0 reads as "unmatched"
            next_ann += int(rng.integers(1, 5))
            anns.append({"id": ann_id, "image_id": img_id, "category_id": cat, "iscrowd": int(crowd),
                         "area": area, "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                         "segmentation": seg})
            objs.append((cat, cx, cy, r, poly))
        n_det = int(rng.integers(0, 30)) if seed % 7 else 130  # > maxDets in one category
        for j in range(n_det):
            near = objs and rng.random() < 0.7
            if near:
                cat, cx, cy, r, poly = objs[int(rng.integers(len(objs)))]
                cx, cy, r = cx + rng.normal(0, r / 4), cy + rng.normal(0, r / 4), r * rng.uniform(0.7, 1.3)
                if rng.random() < 0.2:
                    cat = int(rng.choice(cats))
            else:
                cat, cx, cy, r = int(rng.choice(cats + [99])), rng.uniform(0, w), rng.uniform(0, h), 15.0
            if seed % 7 == 0:
                cat = cats[0]
            if near and rng.random() < 0.6:  # a close copy of the object: high IoU
                shape = poly + rng.normal(0, rng.choice([0.3, 1.0, 3.0]), poly.shape)
            else:
                shape = _star(rng, cx, cy, max(r, 1.0), 8)
            m = rle.from_polygons([shape.ravel().tolist()], h, w)
            bb = rle.to_bbox(m).tolist()
            if rng.random() < 0.1:
                bb[2], bb[3] = 32.0, 32.0
            d = {"image_id": img_id, "category_id": cat, "score": float(np.round(rng.random(), 2)),
                 "segmentation": m}
            if with_bbox:
                d["bbox"] = [round(v + rng.normal(0, 1), 2) for v in bb[:2]] + bb[2:]
            dets.append(d)
    order = rng.permutation(len(anns))
    gt = {"images": images, "annotations": [anns[i] for i in order],
          "categories": [{"id": c} for c in cats]}
    return gt, [dets[i] for i in rng.permutation(len(dets))]


def _pycocotools_eval(gt, dts, iou_type):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        g = COCO()
        g.dataset = copy.deepcopy(gt)
        g.createIndex()
        e = COCOeval(g, g.loadRes(copy.deepcopy(dts)), iou_type)
        e.evaluate()
        e.accumulate()
        e.summarize()
    return e, out.getvalue()


@pytest.mark.parametrize("seed", range(14))
def test_random_against_pycocotools(seed):
    pytest.importorskip("pycocotools")
    gt, dts = _random_case(seed, with_bbox=seed % 3 != 2)
    if not dts:
        dts = _random_case(seed + 100)[1][:1]
    for iou_type in ("bbox", "segm"):
        e, printed = _pycocotools_eval(gt, dts, iou_type)
        ours = coco_evaluate(gt, dts, iou_type)
        assert np.array_equal(ours.precision, e.eval["precision"]), iou_type
        assert np.array_equal(ours.recall, e.eval["recall"]), iou_type
        assert np.array_equal(ours.scores, e.eval["scores"]), iou_type
        assert ours.stats == [float(s) for s in e.stats]
        assert ours.summary().strip() in printed
        for k, c in enumerate(ours.cat_ids):
            p = e.eval["precision"][:, :, k, 0, 2]
            ref = float(np.mean(p[p > -1])) if (p > -1).any() else None
            assert ours.per_class[c] == ref or (ref is not None and math.isclose(ours.per_class[c], ref))
