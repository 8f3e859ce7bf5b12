"""Model-free checks of the segmentation metrics path: ground truth as predictions, NaN detections, bad
ground truth, the IoU-0.50 matching and best-F1 P/R against hand-worked cases, the confusion matrix."""

import json

import numpy as np
import pytest

ONE = pytest.approx(1.0, abs=1e-12)  # COCO divides by (tp + fp + eps): a perfect AP is 1 - 2e-16

from yoloseg.metrics import coco_evaluate
from yoloseg.metrics.confusion import ConfusionMatrix
from yoloseg.metrics.segment import CONF_GRID, SegmentEvaluator, SegmentMetrics, match_detections

NAMES = {0: "ellipse", 1: "triangle", 2: "rectangle"}


def _poly(rng, w, h):
    cx, cy = rng.uniform(20, w - 20), rng.uniform(20, h - 20)
    r = rng.uniform(6, 18)
    a = np.sort(rng.uniform(0, 2 * np.pi, 7))
    return np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], 1)


def _synthetic_gt(n_images=6, seed=0, shape=(96, 128)):
    rng = np.random.default_rng(seed)
    ev = SegmentEvaluator(NAMES)
    for i in range(n_images):
        k = int(rng.integers(0, 5))  # 0 instances: an empty label file
        polys = [_poly(rng, shape[1], shape[0]) for _ in range(k)]
        ev.add_ground_truth(i + 1, shape, rng.integers(0, 3, k), polys, file_name=f"im{i}.png")
    return ev


def _gt_as_predictions(ev, score=0.9):
    for a in ev.annotations:
        x, y, w, h = a["bbox"]
        ev.add_predictions(a["image_id"], [[x, y, x + w, y + h]], [score], [a["category_id"] - 1], [a["segmentation"]])


def test_ground_truth_as_predictions_gives_map_one():
    ev = _synthetic_gt()
    assert len(ev.annotations) > 5
    _gt_as_predictions(ev)
    m = ev.evaluate()
    for metric in (m.box, m.seg):
        assert metric.map == ONE and metric.map50 == ONE and metric.map75 == ONE
        assert metric.mp == 1.0 and metric.mr == 1.0
        present = m.nt_per_class > 0
        assert metric.ap[present].tolist() == [ONE] * int(present.sum())
    assert m.fitness == pytest.approx(2.0)
    rd = m.results_dict
    for k in SegmentMetrics.KEYS:
        assert rd[k] == ONE
    assert rd["fitness"] == pytest.approx(2.0)


def test_shifted_predictions_lower_map_and_match_coco_on_saved_json(tmp_path):
    ev = _synthetic_gt(seed=1)
    rng = np.random.default_rng(3)
    for a in ev.annotations:
        x, y, w, h = a["bbox"]
        dx = float(rng.uniform(-4, 4))
        ev.add_predictions(a["image_id"], [[x + dx, y, x + w + dx, y + h]], [float(rng.uniform(0.1, 1))],
                           [a["category_id"] - 1], [a["segmentation"]])
    results = ev.coco_results()
    m = ev.evaluate(results)
    assert 0 < m.box.map < 0.99 and m.seg.map == ONE  # masks unchanged, boxes shifted
    gt_path, dt_path = tmp_path / "gt.json", tmp_path / "dt.json"
    gt_path.write_text(json.dumps(ev.coco_gt()))
    dt_path.write_text(json.dumps(results))
    for iou_type, metric in (("bbox", m.box), ("segm", m.seg)):
        again = coco_evaluate(str(gt_path), str(dt_path), iou_type)
        assert list(again.stats) == metric.stats


def test_nan_detections_are_dropped_not_fatal():
    ev = _synthetic_gt(seed=2)
    _gt_as_predictions(ev)
    img = ev.annotations[0]["image_id"]
    seg = ev.annotations[0]["segmentation"]
    ev.add_predictions(img, [[np.nan, 1, 5, 5], [1, 1, 5, 5], [1, 1, 5, 5]], [0.99, np.nan, np.inf],
                       [0, 0, 0], [seg, seg, seg])
    ev.add_predictions(img, [[1, 1, 5, 5]], [0.5], [7], [seg])  # unknown class
    assert ev.n_bad_detections == 4
    assert any("non-finite" in msg for _, msg in ev.problems)
    m = ev.evaluate()
    assert m.box.map == ONE and m.seg.map == ONE


def test_bad_ground_truth_is_reported_per_file():
    ev = SegmentEvaluator(NAMES)
    good = np.array([[10, 10], [40, 10], [40, 30], [10, 30]], float)
    outside = np.array([[-20, -20], [200, -20], [200, 200], [-20, 200]], float)  # beyond a 64x64 image
    polys = [good, good[:2], np.array([[1, np.nan], [3, 4], [5, 1]]), good, outside]
    ev.add_ground_truth(1, (64, 64), [0, 1, 2, 9, 1], polys, file_name="bad.png")
    ev.add_ground_truth(2, (64, 64), [], [], file_name="empty.png")
    msgs = [m for f, m in ev.problems if f == "bad.png"]
    assert len(msgs) == 3
    assert any("fewer than 3" in m for m in msgs) and any("non-finite" in m for m in msgs)
    assert any("unknown class" in m for m in msgs)
    assert [a["category_id"] for a in ev.annotations] == [1, 2]
    clipped = ev.annotations[1]
    assert clipped["bbox"] == [0.0, 0.0, 64.0, 64.0] and clipped["area"] == 64 * 64
    assert ev.annotations[0]["area"] == 30 * 20  # pixel count of the rasterized rectangle
    _gt_as_predictions(ev)
    m = ev.evaluate()
    assert m.seg.map == ONE and m.n_images == 2


def test_no_ground_truth_at_all_gives_zeros():
    ev = SegmentEvaluator(NAMES)
    ev.add_ground_truth(1, (32, 32), [], [])
    m = ev.evaluate()
    assert m.box.map == 0 and m.seg.map50 == 0 and m.fitness == 0


def test_match_detections_follows_coco_rules():
    iou = np.array([[0.6, 0.7, 0.0],
                    [0.6, 0.7, 0.0],
                    [0.4, 0.0, 0.0],
                    [0.0, 0.0, 0.9]])
    crowd = np.array([False, False, True])
    tp, ign = match_detections(iou, crowd)
    # det0 takes gt1 (highest IoU), det1 falls back to gt0, det2 below 0.5, det3 only overlaps the crowd
    assert tp.tolist() == [True, True, False, False]
    assert ign.tolist() == [False, False, False, True]
    tie = np.array([[0.8, 0.8]])
    tp, _ = match_detections(np.vstack([tie, [[0.0, 0.8]]]), np.array([False, False]))
    assert tp.tolist() == [True, False]  # COCO's loop keeps the last of equal IoUs: det0 took gt1


def test_precision_recall_at_best_f1_hand_case():
    # one class, two objects; detections 0.9 (hit), 0.8 (miss), 0.3 (hit)
    ev = SegmentEvaluator({0: "a"})
    sq = lambda x: np.array([[x, 10], [x + 20, 10], [x + 20, 30], [x, 30]], float)  # noqa: E731
    ev.add_ground_truth(1, (64, 128), [0, 0], [sq(5), sq(60)])
    boxes = [[5, 10, 25, 30], [100, 40, 110, 50], [60, 10, 80, 30]]
    a0, a1 = ev.annotations[0]["segmentation"], ev.annotations[1]["segmentation"]
    miss = {"size": [64, 128], "counts": a0["counts"]}
    ev.add_predictions(1, boxes, [0.9, 0.8, 0.3], [0, 0, 0], [a0, miss, a1])
    m = ev.evaluate()
    # F1: conf <= 0.3 -> P 2/3, R 1, F1 0.8; (0.3, 0.8] -> 0.5; (0.8, 0.9] -> 2/3
    assert m.box.conf == pytest.approx(CONF_GRID[CONF_GRID <= 0.3][-1])
    assert m.box.mp == pytest.approx(2 / 3) and m.box.mr == 1.0
    c = m.box.curves
    i = np.searchsorted(CONF_GRID, 0.85)
    assert c["p"][0, i] == 1.0 and c["r"][0, i] == 0.5
    assert c["p"][0, -1] == 0.0 and c["r"][0, -1] == 0.0  # nothing scores >= 1.0


def test_confusion_matrix_rules():
    cm = ConfusionMatrix(nc=2, conf=0.25, iou_thres=0.45)
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]], float)
    det = np.array([[0, 0, 10, 10], [20, 20, 30, 31], [80, 80, 90, 90], [50, 50, 60, 60]], float)
    cm.process(det, [0.9, 0.8, 0.7, 0.1], [0, 0, 1, 1], gt, [0, 1, 1])
    expect = np.zeros((3, 3), int)
    expect[0, 0] = 1  # right class
    expect[0, 1] = 1  # class 1 predicted as 0
    expect[1, 2] = 1  # false alarm
    expect[2, 1] = 1  # missed (its only detection is below conf)
    assert (cm.matrix == expect).all()
    cm.process(np.zeros((0, 4)), [], [], gt[:1], [1])
    assert cm.matrix[2, 1] == 2
    norm = cm.normalized()
    assert np.allclose(norm.sum(0)[cm.matrix.sum(0) > 0], 1.0)


def test_coco_annotations_with_crowd_regions():
    """Ground truth from a COCO file (polygons, an uncompressed crowd RLE): a detection on the crowd region
    is neither a hit nor a false positive, in COCO's mAP and in P/R alike."""
    h, w = 40, 60
    crowd = np.zeros((h, w), np.uint8)
    crowd[5:35, 35:55] = 1
    runs, flat, cur, n = [], crowd.T.reshape(-1), 0, 0
    for v in flat:  # column-major run lengths starting with background
        if v != cur:
            runs.append(n)
            cur, n = v, 0
        n += 1
    runs.append(n)
    image = {"id": 7, "file_name": "x.jpg", "height": h, "width": w}
    anns = [
        {"id": 1, "image_id": 7, "category_id": 3, "iscrowd": 0, "area": 300.0, "bbox": [5, 5, 20, 15],
         "segmentation": [[5, 5, 25, 5, 25, 20, 5, 20]]},
        {"id": 2, "image_id": 7, "category_id": 3, "iscrowd": 1, "area": 600.0, "bbox": [35, 5, 20, 30],
         "segmentation": {"size": [h, w], "counts": runs}},
    ]
    ev = SegmentEvaluator({0: "a", 1: "b"}, category_ids={0: 1, 1: 3})
    ev.add_coco_annotations(image, anns)
    from yoloseg.metrics.segment import encode_masks

    m1 = np.zeros((h, w), np.uint8)
    m1[5:20, 5:25] = 1
    ev.add_predictions(7, [[5, 5, 25, 20], [35, 5, 55, 35]], [0.9, 0.8], [1, 1], encode_masks(np.stack([m1, crowd])))
    m = ev.evaluate()
    assert m.nt_per_class.tolist() == [0, 1]
    for metric in (m.box, m.seg):
        assert metric.map == ONE
        assert metric.p[1] == 1.0 and metric.r[1] == 1.0
    assert [r["category_id"] for r in ev.coco_results()] == [3, 3]
