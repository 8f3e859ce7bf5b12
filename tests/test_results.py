"""Results / Boxes / Masks: coordinates, polygons, files and drawing, on hand-built detections."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from yoloseg.data.letterbox import LetterBox
from yoloseg.engine.results import Boxes, Masks, Results
from yoloseg.utils.plotting import colors, default_line_width

NAMES = {0: "ellipse", 1: "triangle", 2: "rectangle"}
H, W = 200, 300


def _img():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def _rect_mask(shape, x0, y0, x1, y1):
    m = np.zeros(shape, bool)
    m[y0 : y1 + 1, x0 : x1 + 1] = True
    return m


def _result(masks_at="orig"):
    """Two detections: a rectangle (60..180, 40..140) and a square (200..260, 120..180), in original pixels."""
    boxes = torch.tensor([[60.0, 40.0, 181.0, 141.0, 0.9, 2.0], [200.0, 120.0, 261.0, 181.0, 0.4, 0.0]])
    m = np.stack([_rect_mask((H, W), 60, 40, 180, 140), _rect_mask((H, W), 200, 120, 260, 180)])
    if masks_at == "letterbox":  # put the masks through the same letterbox the model input gets
        lb = LetterBox(320, auto=True, stride=32)
        m = np.stack([lb((x * 255).astype(np.uint8))[0] > 127 for x in m])
    return Results(_img(), "some/dir/img.jpg", NAMES, boxes=boxes, masks=torch.from_numpy(m))


def test_boxes_formats():
    b = Boxes(torch.tensor([[10.0, 20.0, 50.0, 100.0, 0.5, 1.0]]), (200, 400))
    assert b.xyxy.tolist() == [[10, 20, 50, 100]]
    assert b.xywh.tolist() == [[30, 60, 40, 80]]
    np.testing.assert_allclose(b.xyxyn, [[10 / 400, 20 / 200, 50 / 400, 100 / 200]], rtol=1e-6)
    np.testing.assert_allclose(b.xywhn, [[30 / 400, 60 / 200, 40 / 400, 80 / 200]], rtol=1e-6)
    assert b.conf.tolist() == [0.5] and b.cls.tolist() == [1.0]
    n = b.numpy()
    assert isinstance(n.data, np.ndarray) and n.xywh.tolist() == [[30, 60, 40, 80]]
    assert isinstance(b.cpu().data, torch.Tensor)
    with pytest.raises(ValueError, match="n, 6"):
        Boxes(torch.zeros(3, 5), (10, 10))


def test_results_container():
    r = _result()
    assert len(r) == 2 and r.orig_shape == (H, W) and r.path == "some/dir/img.jpg"
    one = r[1]
    assert len(one) == 1 and one.boxes.cls.tolist() == [0.0] and one.masks.data.shape == (1, H, W)
    assert len(r[[0, 1]]) == 2
    assert isinstance(r.numpy().boxes.data, np.ndarray)
    assert r.verbose() == "1 ellipse, 1 rectangle"
    empty = Results(_img(), "x.jpg", NAMES)
    assert len(empty) == 0 and empty.verbose() == "no detections"
    assert empty.summary() == [] and json.loads(empty.to_json()) == []


def test_polygons_original_resolution():
    r = _result("orig")
    xy = r.masks.xy
    assert len(xy) == 2 and all(p.dtype == np.float32 and p.shape[1] == 2 for p in xy)
    # outer contour of a filled rectangle: vertices at its corner pixel centres
    assert xy[0].min(0).tolist() == [60, 40] and xy[0].max(0).tolist() == [180, 140]
    np.testing.assert_allclose(r.masks.xyn[0], xy[0] / np.array([W, H], np.float32))


def test_polygons_letterbox_resolution_map_back():
    r = _result("letterbox")
    assert r.masks.data.shape[1:] == (224, 320)  # 200x300 -> 213x320 + 11 rows of padding
    lo, hi = r.masks.xy[0].min(0), r.masks.xy[0].max(0)
    np.testing.assert_allclose(lo, [60, 40], atol=1.5)
    np.testing.assert_allclose(hi, [180, 140], atol=1.5)
    for p in r.masks.xy:
        assert (p[:, 0] >= 0).all() and (p[:, 0] <= W).all() and (p[:, 1] >= 0).all() and (p[:, 1] <= H).all()


def test_polygon_strategy():
    m = np.zeros((1, 50, 80), bool)
    m[0, 5:30, 5:40] = True  # big part
    m[0, 35:45, 60:70] = True  # small part
    largest = Masks(torch.from_numpy(m), (50, 80)).xy[0]
    assert largest.max(0).tolist() == [39, 29]  # only the big rectangle
    merged = Masks(torch.from_numpy(m), (50, 80), strategy="all").xy[0]
    assert merged.max(0).tolist() == [69, 44]  # both parts in one polygon
    with pytest.raises(ValueError, match="strategy"):
        Masks(torch.from_numpy(m), (50, 80), strategy="biggest")


def test_summary_and_json():
    r = _result()
    s = r.summary()
    assert [d["name"] for d in s] == ["rectangle", "ellipse"]
    assert s[0]["class"] == 2 and s[0]["confidence"] == pytest.approx(0.9, abs=1e-5)
    assert s[0]["box"] == {"x1": 60.0, "y1": 40.0, "x2": 181.0, "y2": 141.0}
    assert min(s[0]["segments"]["x"]) == 60 and max(s[0]["segments"]["y"]) == 140
    sn = r.summary(normalize=True)
    assert sn[0]["box"]["x2"] == pytest.approx(181 / W, abs=1e-5)
    assert json.loads(r.to_json()) == json.loads(json.dumps(s))


def test_save_txt(tmp_path):
    r = _result()
    f = r.save_txt(tmp_path / "labels" / "img.txt")
    lines = open(f).read().splitlines()
    assert len(lines) == 2
    vals = [float(v) for v in lines[0].split()]
    assert vals[0] == 2 and (len(vals) - 1) % 2 == 0 and (len(vals) - 1) // 2 >= 3
    pts = np.array(vals[1:]).reshape(-1, 2) * [W, H]
    np.testing.assert_allclose(pts.min(0), [60, 40], atol=1e-3)
    np.testing.assert_allclose(pts.max(0), [180, 140], atol=1e-3)
    r.save_txt(tmp_path / "c.txt", save_conf=True)
    first = open(tmp_path / "c.txt").read().splitlines()[0].split()
    assert float(first[-1]) == pytest.approx(0.9, abs=1e-5) and len(first) == len(lines[0].split()) + 1
    # instances whose polygon has < 3 points are left out; no lines -> no file
    tiny = Results(_img(), "t.jpg", NAMES, boxes=torch.tensor([[1.0, 1, 2, 2, 0.5, 0]]),
                   masks=torch.from_numpy(_rect_mask((H, W), 1, 1, 1, 1)[None]))
    tiny.save_txt(tmp_path / "tiny.txt")
    assert not (tmp_path / "tiny.txt").exists()
    # boxes only: cls xc yc w h
    det = Results(_img(), "d.jpg", NAMES, boxes=torch.tensor([[0.0, 0, 150, 100, 0.5, 1]]))
    det.save_txt(tmp_path / "d.txt")
    assert [float(v) for v in open(tmp_path / "d.txt").read().split()] == [1, 0.25, 0.25, 0.5, 0.5]


@pytest.mark.parametrize("masks_at", ["orig", "letterbox"])
def test_plot_blends_mask_colour(masks_at):
    r = _result(masks_at)
    img = r.orig_img
    out = r.plot(boxes=False, labels=False, conf=False)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert out is not img and not np.shares_memory(out, img)
    y, x = 90, 120  # inside the rectangle (class 2), far from its edges
    expected = 0.5 * img[y, x].astype(float) + 0.5 * np.array(colors(2), float)
    assert np.abs(out[y, x].astype(float) - expected).max() <= 1.5
    assert np.array_equal(out[10, 10], img[10, 10])  # outside every mask: untouched
    # boxes and labels change pixels on the box outline in the class colour
    full = r.plot(masks=False)
    assert np.abs(full[90, 60].astype(int) - np.array(colors(2))).max() <= 40
    assert np.array_equal(full[150, 100], img[150, 100])


def test_plot_empty_and_line_width(tmp_path):
    e = Results(_img(), "x.jpg", NAMES)
    assert np.array_equal(e.plot(), e.orig_img)
    assert default_line_width((400, 600)) == 2 and default_line_width((2160, 3840)) == 9
    p = _result().save(tmp_path / "out.png")
    back = cv2.imread(p)
    assert back.shape == (H, W, 3)


def test_mask_boxes_hint_follows_indexing_and_keeps_polygons():
    base = _result("orig")
    crop = base.boxes.xyxy.clone()  # the masks lie inside their boxes
    r = Results(base.orig_img, base.path, NAMES, boxes=base.boxes.data, masks=base.masks.data, mask_boxes=crop)
    assert r.masks.crop_boxes.shape == (2, 4)
    for hinted, plain in [(r, base), (r[1], base[1]), (r[torch.tensor([False, True])], base[[1]]), (r.numpy(), base)]:
        assert hinted.masks.crop_boxes is not None and len(hinted.masks.crop_boxes) == len(hinted)
        for a, b in zip(hinted.masks.xy, plain.masks.xy):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(r[1].masks.crop_boxes, crop[1:].numpy())
    with pytest.raises(ValueError, match="boxes"):
        Masks(base.masks.data, (H, W), boxes=crop[:1])


@pytest.mark.parametrize("retina", [False, True])
def test_segment_postprocess_mask_boxes_contain_every_mask_pixel(retina):
    from yoloseg.engine.predictor import segment_postprocess

    g = torch.Generator().manual_seed(3)
    a, nc, nm = 60, 2, 32
    xy = torch.rand(a, 2, generator=g) * 64
    wh = torch.rand(a, 2, generator=g) * 40 + 2
    scores = torch.rand(a, nc, generator=g)
    pred = torch.cat([xy, wh, scores, torch.randn(a, nm, generator=g)], 1).T[None]
    protos = torch.randn(1, nm, 16, 16, generator=g)
    orig = (50, 60)
    (out,) = segment_postprocess((pred, protos), (64, 64), [orig], conf=0.1, retina_masks=retina)
    masks, crop = out["masks"], out["mask_boxes"]
    assert masks is not None and crop.shape == (len(masks), 4)
    h, w = masks.shape[1:]
    ys, xs = torch.arange(h)[:, None], torch.arange(w)[None, :]
    for m, (x1, y1, x2, y2) in zip(masks, crop.tolist()):
        inside = (xs >= np.floor(x1)) & (xs < np.ceil(x2)) & (ys >= np.floor(y1)) & (ys < np.ceil(y2))
        assert m.any() and not (m & ~inside).any()
    res = Results(np.zeros((*orig, 3), np.uint8), "x.jpg", NAMES, **out)
    plain = Masks(masks, orig)
    for p, q in zip(res.masks.xy, plain.xy):
        np.testing.assert_array_equal(p, q)
