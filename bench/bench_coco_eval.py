"""COCO evaluation speed: yoloseg vs pycocotools vs faster-coco-eval (each skipped if absent).

Cases
- medium: ../shared/fixtures/cocoeval/medium_s0 (500 images, 3.5k GT, 46k detections).
- val5k: a generated COCO-val-sized case (5,000 images, ~7 GT and 100 detections each, polygon GT with
  a few crowd RLEs, compressed-RLE detections), written once per session as JSON files.

Every timing covers JSON loading + evaluate + accumulate + summarize, on one thread
(yoloseg: num_threads=1; the peers are single-threaded). Run:
    OMP_NUM_THREADS=1 pytest bench/bench_coco_eval.py --benchmark-only -s
Set YOLOSEG_BENCH_CACHE=<dir> to keep the generated case between sessions.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "cocoeval"
MEDIUM = FIXTURES / "medium_s0"
CAT_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
SIZES = [(480, 640), (640, 480), (427, 640), (640, 427), (375, 500)]


def _star_polygons(rng, cx, cy, rx, ry, n_vert):
    """(N, V, 2) star-shaped polygons around centres, radial noise, V vertices each."""
    n = len(cx)
    ang = np.sort(rng.random((n, n_vert)), axis=1) * 2 * np.pi
    rad = 0.6 + 0.4 * rng.random((n, n_vert))
    x = cx[:, None] + rx[:, None] * rad * np.cos(ang)
    y = cy[:, None] + ry[:, None] * rad * np.sin(ang)
    return np.stack([x, y], axis=2)


def generate_val5k(out_dir: Path, n_images=5000, gt_per_image=7, dets_per_image=100, seed=0):
    """Write gt.json and dt.json of a COCO-val-sized case into out_dir; returns their paths."""
    from yoloseg import _C

    out_dir.mkdir(parents=True, exist_ok=True)
    gt_path, dt_path = out_dir / "gt.json", out_dir / "dt.json"
    if gt_path.is_file() and dt_path.is_file():
        return gt_path, dt_path
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    ann_id = 1
    img_ids = rng.choice(600_000, n_images, replace=False) + 1
    for img_id in img_ids.tolist():
        h, w = SIZES[rng.integers(len(SIZES))]
        images.append({"id": img_id, "width": w, "height": h, "file_name": f"{img_id:012d}.jpg"})
        n = max(0, int(rng.poisson(gt_per_image)))
        # object sizes: COCO-like mix of small / medium / large
        scale = np.exp(rng.normal(3.6, 0.9, n)).clip(4, 0.45 * min(h, w))
        rx = scale * (0.6 + 0.8 * rng.random(n))
        ry = scale * (0.6 + 0.8 * rng.random(n))
        cx = rng.uniform(0, w, n)
        cy = rng.uniform(0, h, n)
        cats = rng.choice(CAT_IDS[:40], n)
        polys = _star_polygons(rng, cx, cy, rx, ry, int(rng.integers(8, 40)))
        polys[..., 0] = polys[..., 0].clip(0, w)
        polys[..., 1] = polys[..., 1].clip(0, h)
        crowd = rng.random(n) < 0.01
        gt_rles = _C.rle_from_polygons([p.ravel() for p in polys], h, w) if n else []
        for j in range(n):
            p = np.round(polys[j], 2)
            x0, y0 = p.min(0)
            x1, y1 = p.max(0)
            a = {"id": ann_id, "image_id": img_id, "category_id": int(cats[j]), "iscrowd": int(crowd[j]),
                 "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]}
            if crowd[j]:
                counts = _C.rle_counts([gt_rles[j]])[0]
                a["segmentation"] = {"size": [h, w], "counts": counts}
                a["area"] = int(sum(counts[1::2]))
            else:
                xs, ys = p[:, 0], p[:, 1]
                a["segmentation"] = [p.ravel().tolist()]
                a["area"] = float(0.5 * abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))))
            anns.append(a)
            ann_id += 1
        # detections: most near a GT (jittered), the rest anywhere
        nd = dets_per_image
        near = int(0.6 * nd) if n else 0
        src = rng.integers(0, max(n, 1), near)
        dcx = np.concatenate([cx[src] + rng.normal(0, 0.15, near) * rx[src] if n else np.zeros(0),
                              rng.uniform(0, w, nd - near)])
        dcy = np.concatenate([cy[src] + rng.normal(0, 0.15, near) * ry[src] if n else np.zeros(0),
                              rng.uniform(0, h, nd - near)])
        drx = np.concatenate([rx[src] * rng.uniform(0.7, 1.3, near) if n else np.zeros(0),
                              np.exp(rng.normal(3.3, 0.9, nd - near))]).clip(2, w)
        dry = np.concatenate([ry[src] * rng.uniform(0.7, 1.3, near) if n else np.zeros(0),
                              np.exp(rng.normal(3.3, 0.9, nd - near))]).clip(2, h)
        dcat = np.concatenate([np.where(rng.random(near) < 0.8, cats[src] if n else 0,
                                        rng.choice(CAT_IDS[:40], near)),
                               rng.choice(CAT_IDS[:40], nd - near)])
        dpolys = _star_polygons(rng, dcx, dcy, drx, dry, 16)
        rles = _C.rle_from_polygons([p.ravel() for p in dpolys], h, w)
        boxes = _C.rle_to_bbox(rles)
        scores = np.round(rng.uniform(0.001, 1.0, nd) ** 2, 5)
        for j in range(nd):
            bx = boxes[j]
            if bx[2] <= 0:
                continue
            dets.append({"image_id": img_id, "category_id": int(dcat[j]),
                         "bbox": [round(float(v), 2) for v in bx],
                         "score": float(max(scores[j], 0.001)), "segmentation": rles[j]})
    cats = [{"id": c, "name": f"class{c}", "supercategory": "thing"} for c in CAT_IDS]
    order = rng.permutation(len(anns))
    gt = {"info": {"description": "generated COCO-val-sized case"}, "images": images,
          "annotations": [anns[i] for i in order], "categories": cats}
    gt_path.write_text(json.dumps(gt))
    dt_path.write_text(json.dumps(dets))
    return gt_path, dt_path


@pytest.fixture(scope="session")
def val5k(tmp_path_factory):
    pytest.importorskip("yoloseg._C")
    cache = os.environ.get("YOLOSEG_BENCH_CACHE")
    out = Path(cache) / "val5k" if cache else tmp_path_factory.mktemp("val5k")
    return generate_val5k(out)


@pytest.fixture(scope="session")
def medium():
    if not (MEDIUM / "gt.json").is_file():
        pytest.skip("medium fixture not found")
    return MEDIUM / "gt.json", MEDIUM / "dt.json.gz"


def _load_dt(path):
    import gzip

    with (gzip.open(path, "rt") if str(path).endswith(".gz") else open(path)) as f:
        return json.load(f)


def run_yoloseg(gt, dt, iou_type):
    from yoloseg.metrics import coco_evaluate

    return coco_evaluate(gt, dt, iou_type, num_threads=1).stats


def run_pycocotools(gt, dt, iou_type):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        g = COCO()
        g.dataset = json.loads(Path(gt).read_text())
        g.createIndex()
        e = COCOeval(g, g.loadRes(_load_dt(dt)), iou_type)
        e.evaluate()
        e.accumulate()
        e.summarize()
    return list(e.stats)


def run_faster_coco_eval(gt, dt, iou_type):
    from faster_coco_eval import COCO, COCOeval_faster

    with contextlib.redirect_stdout(io.StringIO()):
        g = COCO()
        g.dataset = json.loads(Path(gt).read_text())
        g.createIndex()
        e = COCOeval_faster(g, g.loadRes(_load_dt(dt)), iou_type)
        e.evaluate()
        e.accumulate()
        e.summarize()
    return list(e.stats)


RUNNERS = {"yoloseg": (run_yoloseg, "yoloseg._C"), "pycocotools": (run_pycocotools, "pycocotools"),
           "faster_coco_eval": (run_faster_coco_eval, "faster_coco_eval")}


def _bench(benchmark, name, gt, dt, iou_type, rounds):
    fn, module = RUNNERS[name]
    pytest.importorskip(module)
    benchmark.group = f"{benchmark.group or ''}{iou_type}"
    stats = benchmark.pedantic(fn, args=(str(gt), str(dt), iou_type), rounds=rounds, iterations=1)
    assert len(stats) == 12


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("impl", list(RUNNERS))
def test_medium(benchmark, medium, impl, iou_type):
    benchmark.group = "medium-"
    _bench(benchmark, impl, *medium, iou_type, rounds=3 if impl != "pycocotools" else 1)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("impl", list(RUNNERS))
def test_val5k(benchmark, val5k, impl, iou_type):
    benchmark.group = "val5k-"
    _bench(benchmark, impl, *val5k, iou_type, rounds=3 if impl == "yoloseg" else 1)
