"""Run-length mask kernels: known values, round trips, fixture strings, pycocotools cross-checks."""

import json
from pathlib import Path

import numpy as np
import pytest

from yoloseg.metrics import rle

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "cocoeval"


def _column_mask(bits, h):
    """A (h, len(bits)//h) mask whose column-major reading is `bits`."""
    return np.asarray(bits, np.uint8).reshape(-1, h).T


def test_known_counts_and_strings():
    # M = [0 0 1 1 1 0 1] -> counts [2, 3, 1, 1]; the 4th count is stored as 1 - 3 = -2 -> 'N'
    m = _column_mask([0, 0, 1, 1, 1, 0, 1], 7)
    r = rle.encode(m)[0]
    assert r == {"size": [7, 1], "counts": "231N"}
    assert rle.counts(r) == [2, 3, 1, 1]
    # M = [1 1 1 1 1 1 0] -> counts [0, 6, 1]
    r = rle.encode(_column_mask([1, 1, 1, 1, 1, 1, 0], 7))[0]
    assert rle.counts(r) == [0, 6, 1]
    assert r["counts"] == "061"
    # a run of 100: 100 = 0b11_00100 -> low group 4 | 0x20 (more), then 3 -> '0'+36, '0'+3
    r = rle.encode(np.ones((10, 10), np.uint8))[0]
    assert r["counts"] == "0" + chr(48 + 36) + chr(48 + 3)
    assert rle.counts(r) == [0, 100]


def test_column_major_order_and_decode():
    m = np.zeros((3, 4), np.uint8)
    m[0, 1] = 1  # pixel index y + h*x = 0 + 3 = 3
    m[2, 3] = 1  # 2 + 9 = 11
    assert rle.counts(rle.encode(m)[0]) == [3, 1, 7, 1]
    assert np.array_equal(rle.decode(rle.encode(m)[0]), m)
    assert rle.area(rle.encode(m)[0]) == 2
    assert np.array_equal(rle.to_bbox(rle.encode(m)[0]), [1, 0, 3, 3])


def test_round_trips_random():
    rng = np.random.default_rng(0)
    for _ in range(200):
        h, w = rng.integers(1, 50, 2)
        m = rng.random((3, h, w)) < rng.random()
        rs = rle.encode(m)
        assert len(rs) == 3
        assert np.array_equal(rle.decode(rs), m.astype(np.uint8))
        assert np.array_equal(rle.area(rs), m.reshape(3, -1).sum(1))
        # uncompressed counts -> same string
        assert [rle.merge([{"size": r["size"], "counts": c}])["counts"]
                for r, c in zip(rs, rle.counts(rs))] == [r["counts"] for r in rs]


def test_bytes_counts_and_bad_input():
    r = rle.encode(np.eye(5, dtype=bool))[0]
    assert rle.area({"size": r["size"], "counts": r["counts"].encode()}) == 5
    with pytest.raises(ValueError):
        rle.encode(np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError):
        rle.encode(np.zeros((1, 2, 2, 2), np.uint8))
    with pytest.raises(ValueError):
        rle.area({"size": [2, 2]})
    with pytest.raises(ValueError):
        rle.from_polygons([[0, 0, 1, float("nan"), 2, 2]], 5, 5)


def test_fixture_strings_round_trip():
    # compressed strings written by pycocotools: decode -> encode reproduces them, areas agree
    dts = json.loads((FIXTURES / "small_s0" / "dt.json").read_text())[:300]
    segs = [d["segmentation"] for d in dts]
    for s in segs:
        m = rle.decode(s)
        assert rle.encode(m)[0]["counts"] == s["counts"]
        assert rle.area(s) == int(m.sum())


def test_polygons_empty_and_degenerate():
    empty = rle.from_polygons([], 4, 6)
    assert rle.area(empty) == 0 and empty["size"] == [4, 6]
    # a square polygon covers the pixel centres inside it
    sq = rle.from_polygons([[1, 1, 4, 1, 4, 3, 1, 3]], 6, 6)
    m = rle.decode(sq)
    assert m.sum() > 0 and m[0].sum() == 0 and m[:, 0].sum() == 0
    for short in ([[1, 1]], [[1, 1, 3, 3]], [[2, 2, 2, 2, 2, 2]]):
        r = rle.from_polygons(short, 8, 8)
        assert r["size"] == [8, 8] and rle.area(r) <= 8


def test_iou_boxes_crowd_rule():
    d = np.array([[0, 0, 10, 10]], float)
    g = np.array([[5, 0, 10, 10], [0, 0, 20, 20]], float)
    o = rle.iou(d, g, [0, 1])
    assert o[0, 0] == pytest.approx(50 / 150)
    assert o[0, 1] == 1.0  # crowd: intersection / detection area
    assert rle.iou([], g, [0, 0]).shape == (0, 2)


# ---------------------------------------------------------------------------------------------
# pycocotools cross-checks (run in CI, where the test extra installs pycocotools)


def test_against_pycocotools_masks():
    mask_api = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(1)
    for it in range(300):
        h, w = (int(v) for v in rng.integers(1, 60, 2))
        m = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        if it % 3 == 0:
            m[:] = 0
            m[rng.integers(h):, rng.integers(w):] = 1
        ref = mask_api.encode(np.asfortranarray(m))
        ours = rle.encode(m)[0]
        assert ours["counts"] == ref["counts"].decode()
        assert np.array_equal(rle.to_bbox(ours), mask_api.toBbox(ref))
        assert rle.area(ours) == mask_api.area(ref)


def test_against_pycocotools_uncompressed_bbox():
    # non-canonical counts (empty runs) exercise the box rules of pycocotools 2.0.11
    mask_api = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(2)
    for _ in range(1000):
        h, w = (int(v) for v in rng.integers(1, 12, 2))
        cnts, tot = [], 0
        while tot < h * w:
            c = int(min(rng.integers(0, 6), h * w - tot))
            cnts.append(c)
            tot += c
        ref = mask_api.frPyObjects({"size": [h, w], "counts": cnts}, h, w)
        ours = {"size": [h, w], "counts": cnts}
        assert np.array_equal(rle.to_bbox(ours), mask_api.toBbox(ref))
        assert rle.merge([ours])["counts"] == ref["counts"].decode()


def test_against_pycocotools_polygons_merge_iou():
    mask_api = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(3)
    for it in range(400):
        h, w = (int(v) for v in rng.integers(1, 80, 2))
        k = int(rng.integers(3, 12))
        p = rng.random(2 * k) * (max(h, w) + 10) - 5
        if it % 4 == 0:
            p = np.round(p)  # on-grid vertices and exact .5 cases
        elif it % 4 == 1:
            p = np.round(p * 2) / 2
        parts = [p.tolist()]
        if it % 3 == 0:
            parts.append((rng.random(10) * max(h, w)).tolist())
        if it % 5 == 0:
            parts.append([1.0, 2.0])  # degenerate part after a real one
        ref_parts = mask_api.frPyObjects(parts, h, w)
        ref = mask_api.merge(ref_parts)
        ours = rle.from_polygons(parts, h, w)
        assert ours["counts"] == ref["counts"].decode()
        inter_ref = mask_api.merge(ref_parts, intersect=True)
        ours_parts = [rle.from_polygons([q], h, w) for q in parts]
        assert rle.merge(ours_parts, intersect=True)["counts"] == inter_ref["counts"].decode()
        crowd = [it % 2, 0, 1][: len(ours_parts)]
        assert np.array_equal(rle.iou([ours], ours_parts, crowd),
                              np.asarray(mask_api.iou([ref], ref_parts, crowd)))
        bd = rng.random((4, 4)) * 30
        bg = rng.random((3, 4)) * 30
        assert np.array_equal(rle.iou(bd, bg, [0, 1, 0]), mask_api.iou(bd, bg, [0, 1, 0]))


def test_far_vertices_equal_pycocotools():
    """Vertices far outside the image (the walk is cut to the image's columns, and only the steps where the
    column changes are visited on steep edges) give pycocotools' exact counts."""
    mask_api = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(7)
    for it in range(800):
        h, w = (int(v) for v in rng.integers(1, 60, 2))
        k = int(rng.integers(3, 9))
        p = rng.random(2 * k) * (max(h, w) + 10) - 5
        far = rng.random(2 * k) < 0.4
        p[far] = (rng.random(int(far.sum())) * 2 - 1) * [1e2, 1e3, 1e4, 1e5][it % 4]
        if it % 3 == 0:
            p = np.round(p)
        ref = mask_api.merge(mask_api.frPyObjects([p.tolist()], h, w))
        assert rle.from_polygons([p.tolist()], h, w)["counts"] == ref["counts"].decode(), (h, w, p.tolist())


def test_polygon_at_the_coordinate_limit():
    """Edges 2e8 long (the 1e8 limit each way) rasterise like their in-image part: a square around the image
    covers it, a band across it equals the same band ending 1e4 out (equal to pycocotools by the test above),
    and a polygon wholly outside is empty."""
    h, w = 48, 64
    around = [-1e8, -1e8, 1e8, -1e8 + 3, 1e8, 1e8, -1e8 + 7, 1e8 - 7]
    got = rle.decode(rle.from_polygons([around], h, w))
    assert got.shape == (h, w) and got.all()
    outside = rle.from_polygons([[1e8, 1e8, 1e8 - 5, 1e8, 1e8, 1e8 - 9]], h, w)
    assert not rle.decode(outside).any()
    sliver = [-1e8, 10.2, 1e8, 10.2, 1e8, 20.7, -1e8, 20.7]
    near = [-1e4, 10.2, 1e4, 10.2, 1e4, 20.7, -1e4, 20.7]
    assert rle.from_polygons([sliver], h, w)["counts"] == rle.from_polygons([near], h, w)["counts"]


def test_encode_windows_equals_encode_of_the_full_masks():
    from yoloseg.metrics import rle

    rng = np.random.default_rng(4)
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        n = int(rng.integers(1, 6))
        masks = np.zeros((n, h, w), np.uint8)
        windows, regions = [], []
        for i in range(n):
            x0, x1 = sorted(int(v) for v in rng.integers(0, w + 1, 2))
            y0, y1 = sorted(int(v) for v in rng.integers(0, h + 1, 2))
            win = rng.random((y1 - y0, x1 - x0)) < rng.uniform(0, 1)
            masks[i, y0:y1, x0:x1] = win
            windows.append(win)
            regions.append((x0, y0, x1, y1))
        assert rle.encode_windows(windows, regions, h, w) == rle.encode(masks)


def test_encode_windows_rejects_mismatched_input():
    from yoloseg.metrics import rle

    with pytest.raises(ValueError, match="does not match region"):
        rle.encode_windows([np.ones((2, 3), bool)], [(0, 0, 2, 2)], 5, 5)
    with pytest.raises(ValueError, match="lies outside"):
        rle.encode_windows([np.ones((2, 2), bool)], [(4, 4, 6, 6)], 5, 5)
    with pytest.raises(ValueError, match="2 regions"):
        rle.encode_windows([np.ones((2, 2), bool)], [(0, 0, 2, 2), (0, 0, 1, 1)], 5, 5)


def test_encode_windows_on_two_threads_equals_encode():
    import torch

    from yoloseg.metrics import rle

    rng = np.random.default_rng(9)
    n, h, w = 40, 300, 400
    masks = np.zeros((n, h, w), np.uint8)
    windows, regions = [], []
    for i in range(n):
        x0, y0 = int(rng.integers(0, 200)), int(rng.integers(0, 150))
        x1, y1 = x0 + int(rng.integers(1, 200)), y0 + int(rng.integers(1, 150))
        win = rng.random((y1 - y0, x1 - x0)) < 0.3
        masks[i, y0:y1, x0:x1] = win
        windows.append(win)
        regions.append((x0, y0, x1, y1))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        got = rle.encode_windows(windows, regions, h, w)
    finally:
        torch.set_num_threads(before)
    assert got == rle.encode(masks)
