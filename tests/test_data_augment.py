"""Augmentations keep polygons, boxes and masks consistent with the pixels.

The oracle is the image itself: shapes are drawn in pure colours, the image is warped by OpenCV, and the
returned boxes and masks must match where those colours ended up.
"""

import cv2
import numpy as np
import pytest

from yoloseg.data.augment import (
    copy_paste,
    copy_paste_flip,
    cutmix,
    format_sample,
    letterbox_sample,
    mixup,
    random_flip,
)
from yoloseg.data.augment_polygons import Polygons
from yoloseg.data.dataset import SegmentDataset

# BGR colour of each class: red, green, blue, yellow
COLOURS = [(0, 0, 255), (0, 255, 0), (255, 0, 0), (0, 255, 255)]


def _sample(img, polys_px, cls):
    return {"img": img, "cls": np.asarray(cls, np.int64), "polys": Polygons.from_list(polys_px)}


def test_clip_is_exact():
    # square 0..10 half outside a 5-wide window; triangle with one vertex outside
    sq = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], np.float32)
    tri = np.array([[2, 2], [14, 2], [2, 8]], np.float32)  # area 36; the part x > 8 is the triangle (8,2),(14,2),(8,5) of area 9
    gone = np.array([[20, 20], [30, 20], [30, 30]], np.float32)
    p, keep = Polygons.from_list([sq, tri, gone]).clip(8, 10)
    assert keep.tolist() == [0, 1]
    np.testing.assert_allclose(p.areas(), [80.0, 27.0], rtol=1e-5)
    np.testing.assert_allclose(p.boxes(), [[0, 0, 8, 10], [2, 2, 8, 8]], atol=1e-5)


def test_flip_maps_known_rectangle():
    img = np.zeros((100, 200, 3), np.uint8)
    rect = np.array([[20, 20], [60, 20], [60, 50], [20, 50]], np.float32)  # x 0.1..0.3, y 0.2..0.5
    s = random_flip(_sample(img, [rect], [0]), np.random.default_rng(0), p_lr=1.0, p_ud=1.0)
    out = format_sample(s, mask_ratio=4)
    # lr: x -> 200 - x => 140..180 ; ud: y -> 100 - y => 50..80
    np.testing.assert_allclose(out["bboxes"][0].numpy(), [160 / 200, 65 / 100, 40 / 200, 30 / 100], atol=1e-6)


def test_letterbox_maps_known_rectangle():
    img = np.zeros((100, 200, 3), np.uint8)
    rect = np.array([[20, 20], [60, 20], [60, 50], [20, 50]], np.float32)
    s = letterbox_sample(_sample(img, [rect], [0]), 320)
    # scale 1.6 -> 320x160, padded 80 px top and bottom
    assert s["img"].shape == (320, 320, 3)
    np.testing.assert_allclose(s["polys"].boxes()[0], [32, 112, 96, 160], atol=1e-4)
    assert (s["img"][:80] == 114).all() and (s["img"][240:] == 114).all()


def test_masks_follow_polygons_and_stay_inside_boxes():
    img = np.zeros((256, 256, 3), np.uint8)
    tri = np.array([[30, 30], [226, 50], [80, 222]], np.float32)
    s = format_sample(_sample(img, [tri], [0]), mask_ratio=4, overlap_mask=False)
    m = s["masks"][0].numpy()
    assert m.shape == (64, 64)
    ys, xs = np.nonzero(m)
    assert xs.min() >= 30 / 4 - 1 and xs.max() <= 226 / 4 and ys.min() >= 30 / 4 - 1 and ys.max() <= 222 / 4
    # oracle: pixel coverage of the triangle drawn at full resolution, averaged over 4x4 blocks
    full = np.zeros((256, 256), np.uint8)
    cv2.fillPoly(full, [np.round((tri - 0.5) * 16).astype(np.int32)], 1, shift=4)
    ref = cv2.resize(full.astype(np.float32), (64, 64), interpolation=cv2.INTER_AREA) > 0.5
    assert (m.astype(bool) & ref).sum() / (m.astype(bool) | ref).sum() > 0.9


def test_copy_paste_flip_pastes_mirrored_pixels():
    img = np.zeros((60, 100, 3), np.uint8)
    rect = np.array([[10, 10], [30, 10], [30, 40], [10, 40]], np.float32)
    cv2.rectangle(img, (10, 10), (29, 39), (0, 0, 255), -1)
    s = copy_paste_flip(_sample(img, [rect], [3]), np.random.default_rng(0), p=1.0)
    assert s["cls"].tolist() == [3, 3]
    np.testing.assert_allclose(s["polys"].boxes()[1], [70, 10, 90, 40])
    assert (s["img"][10:40, 70:90] == (0, 0, 255)).all()
    assert (s["img"][10:40, 10:30] == (0, 0, 255)).all()


def test_mixup_keeps_both_label_sets():
    a = _sample(np.full((32, 32, 3), 200, np.uint8), [np.array([[1, 1], [9, 1], [5, 9]], np.float32)], [0])
    b = _sample(np.zeros((32, 32, 3), np.uint8), [np.array([[10, 10], [20, 10], [15, 20]], np.float32)] * 2, [1, 2])
    out = mixup(a, b, np.random.default_rng(0))
    assert out["cls"].tolist() == [0, 1, 2] and len(out["polys"]) == 3
    assert 60 < out["img"].mean() < 140


@pytest.fixture
def colour_set(tmp_path):
    """4 images, each with one pure-colour convex shape of class = colour index, on black."""
    rng = np.random.default_rng(3)
    root = tmp_path / "colours"
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    for i in range(4):
        h, w = (120, 160) if i % 2 else (160, 120)
        img = np.zeros((h, w, 3), np.uint8)
        cx, cy = w / 2 + rng.uniform(-10, 10), h / 2 + rng.uniform(-10, 10)
        if i in (1, 3):
            a = rng.uniform(0, np.pi)
            pts = np.array([[np.cos(a + k * np.pi / 2), np.sin(a + k * np.pi / 2)] for k in range(4)]) * 35
        else:
            pts = np.array([[np.cos(a), np.sin(a)] for a in rng.uniform(0, 2 * np.pi, 1) + [0, 2.2, 4.2]]) * 40
        poly = pts + [cx, cy]
        cv2.fillPoly(img, [np.round((poly - 0.5) * 16).astype(np.int32)], COLOURS[i], shift=4)
        cv2.imwrite(str(root / "images" / "train" / f"{i}.png"), img)
        norm = (poly / [w, h]).reshape(-1)
        (root / "labels" / "train" / f"{i}.txt").write_text(f"{i} " + " ".join(f"{v:.6f}" for v in norm) + "\n")
    return root


def _colour_masks(img_rgb, cls):
    bgr = img_rgb[:, :, ::-1].astype(int)
    want = np.array(COLOURS[cls])
    hi, lo = want > 0, want == 0
    return (bgr[:, :, hi] > 150).all(2) & (bgr[:, :, lo] < 90).all(2)


@pytest.mark.parametrize("mosaic", [1.0, 0.0])
def test_train_pipeline_boxes_and_masks_match_pixels(colour_set, mosaic):
    hyp = dict(mosaic=mosaic, degrees=25.0, shear=4.0, perspective=0.0004, scale=0.4, translate=0.1,
               fliplr=0.5, flipud=0.5, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0)
    ds = SegmentDataset(colour_set / "images" / "train", {"names": {i: str(i) for i in range(4)}}, imgsz=256,
                        augment=True, hyp=hyp, label_cache=False)
    checked = 0
    for key in [(i % 4, e, True) for e in range(4) for i in range(4)]:
        s = ds[key]
        img = s["img"].numpy().transpose(1, 2, 0)
        masks, cls, boxes = s["masks"].numpy(), s["cls"].numpy()[:, 0].astype(int), s["bboxes"].numpy()
        assert masks.dtype == np.int32 and masks.shape == (64, 64)
        assert masks.max() <= len(cls)
        for c in np.unique(cls):
            pix = _colour_masks(img, c)
            n_comp, comp, stats, _ = cv2.connectedComponentsWithStats(pix.astype(np.uint8))
            comp_boxes = [stats[j, :4] for j in range(1, n_comp) if stats[j, 4] > 12]
            for k in np.flatnonzero(cls == c):
                x, y, bw, bh = boxes[k] * 256
                box = np.array([x - bw / 2, y - bh / 2, x + bw / 2, y + bh / 2])
                # the box matches the bounding box of one blob of this colour
                errs = [np.abs(box - [cx, cy, cx + cw, cy + ch]).max() for cx, cy, cw, ch in comp_boxes]
                assert errs and min(errs) <= 2.5, (key, c, box, comp_boxes)
                # the instance's mask pixels lie inside its box (1 mask pixel of slack)
                ys, xs = np.nonzero(masks == k + 1)
                if len(xs):
                    assert xs.min() >= box[0] / 4 - 1.01 and xs.max() <= box[2] / 4 + 0.01
                    assert ys.min() >= box[1] / 4 - 1.01 and ys.max() <= box[3] / 4 + 0.01
                checked += 1
            # the union of this class's masks covers the same pixels as the colour (at 1/4)
            ref = cv2.resize(pix.astype(np.float32), (64, 64), interpolation=cv2.INTER_AREA) > 0.5
            got = np.isin(masks, np.flatnonzero(cls == c) + 1)
            if ref.sum() > 20:
                assert (ref & got).sum() / (ref | got).sum() > 0.8, (key, c)
    assert checked >= 16


def test_copy_paste_from_another_sample():
    img = np.zeros((60, 100, 3), np.uint8)
    src = np.zeros((60, 100, 3), np.uint8)
    cv2.rectangle(src, (60, 20), (79, 49), (255, 0, 0), -1)
    a = _sample(img, [np.array([[10, 10], [30, 10], [30, 40], [10, 40]], np.float32)], [0])
    b = _sample(src, [np.array([[60, 20], [80, 20], [80, 50], [60, 50]], np.float32),
                      np.array([[12, 12], [28, 12], [28, 38], [12, 38]], np.float32)], [2, 1])
    out = copy_paste(a, b, np.random.default_rng(0), p=1.0)
    # the second source instance sits on the existing one (ioa > 0.3): not eligible
    assert out["cls"].tolist() == [0, 2]
    assert (out["img"][20:50, 60:80] == (255, 0, 0)).all() and out["img"][:, :55].max() == 0


@pytest.mark.parametrize("mode", ["flip", "mixup"])
def test_copy_paste_modes_in_pipeline_keep_masks_in_boxes(colour_set, mode):
    hyp = dict(copy_paste=1.0, copy_paste_mode=mode, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0)
    names = {"names": {i: str(i) for i in range(4)}}
    with_cp = SegmentDataset(colour_set / "images" / "train", names, imgsz=128, augment=True, hyp=hyp,
                             label_cache=False)
    without = SegmentDataset(colour_set / "images" / "train", names, imgsz=128, augment=True,
                             hyp={**hyp, "copy_paste": 0.0}, label_cache=False)
    more = 0
    for key in [(i, e, True) for e in range(3) for i in range(4)]:
        s = with_cp[key]
        more += len(s["cls"]) - len(without[key]["cls"])
        boxes = s["bboxes"].numpy() * 128
        for k in range(len(s["cls"])):
            ys, xs = np.nonzero(s["masks"].numpy() == k + 1)
            if len(xs):
                cx, cy, w, h = boxes[k]
                assert xs.min() >= (cx - w / 2) / 4 - 1.01 and xs.max() <= (cx + w / 2) / 4 + 0.01
                assert ys.min() >= (cy - h / 2) / 4 - 1.01 and ys.max() <= (cy + h / 2) / 4 + 0.01
    assert more > 0


def test_cutmix_pastes_a_rectangle_with_its_clipped_instances_and_never_covers_one():
    """The oracle is the pixels: the pasted rectangle shows the other image; every returned polygon of the
    other image lies inside that rectangle and covers the colour it came with."""
    h, w = 80, 120
    a_img = np.zeros((h, w, 3), np.uint8)
    cv2.rectangle(a_img, (5, 5), (24, 19), COLOURS[0], -1)
    a = _sample(a_img, [np.array([[5, 5], [25, 5], [25, 20], [5, 20]], np.float32)], [0])
    b_img = np.zeros((h, w, 3), np.uint8)
    b_polys = []
    for k, (x, y) in enumerate([(40, 30), (80, 50), (60, 10)]):
        cv2.rectangle(b_img, (x, y), (x + 29, y + 19), COLOURS[k + 1], -1)
        b_polys.append(np.array([[x, y], [x + 30, y], [x + 30, y + 20], [x, y + 20]], np.float32))
    applied = 0
    for seed in range(40):
        b = _sample(b_img.copy(), b_polys, [1, 2, 3])
        out = cutmix(_sample(a_img.copy(), [a["polys"].pts], [0]), b, np.random.default_rng(seed))
        assert out["cls"][0] == 0 and (out["img"][5:20, 5:25] == COLOURS[0]).all()  # never covered
        changed = np.any(out["img"] != a_img, axis=2)
        if not changed.any() and len(out["cls"]) == 1:
            continue
        applied += 1
        assert len(out["cls"]) == len(out["polys"]) >= 2
        ys, xs = np.nonzero(changed)  # the pasted pixels that differ from the original image
        boxes = out["polys"].boxes()
        for k in range(1, len(out["cls"])):
            x1, y1, x2, y2 = boxes[k]
            # clipped to the pasted rectangle: inside the extent of the changed pixels
            assert x1 >= xs.min() - 1 and x2 <= xs.max() + 2 and y1 >= ys.min() - 1 and y2 <= ys.max() + 2
            c = int(out["cls"][k])
            inside = out["img"][int(np.ceil(y1)) : int(y2), int(np.ceil(x1)) : int(x2)]
            assert inside.size and (inside == COLOURS[c]).all(-1).mean() > 0.5  # the pasted colour is there
    assert applied >= 5


def test_cutmix_in_the_pipeline_keeps_masks_in_boxes(colour_set):
    names = {"names": {i: str(i) for i in range(4)}}
    hyp = dict(cutmix=1.0, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0)
    ds = SegmentDataset(colour_set / "images" / "train", names, imgsz=128, augment=True, hyp=hyp,
                        label_cache=False)
    for key in [(i, e, True) for e in range(3) for i in range(4)]:
        s = ds[key]
        boxes = s["bboxes"].numpy() * 128
        for k in range(len(s["cls"])):
            ys, xs = np.nonzero(s["masks"].numpy() == k + 1)
            if len(xs):
                cx, cy, w, h = boxes[k]
                assert xs.min() >= (cx - w / 2) / 4 - 1.01 and xs.max() <= (cx + w / 2) / 4 + 0.01


def test_rect_training_batches_share_a_rectangular_shape(colour_set):
    names = {"names": {i: str(i) for i in range(4)}}
    hyp = dict(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, degrees=5.0)
    ds = SegmentDataset(colour_set / "images" / "train", names, imgsz=128, augment=True, hyp=hyp, rect=True,
                        batch_size=2, pad=0.0, label_cache=False)
    assert not ds.mosaic_enabled
    shapes = []
    for b in range(2):
        got = {tuple(ds[(i, 0, True)]["img"].shape[1:]) for i in (2 * b, 2 * b + 1)}
        assert got == {tuple(ds.batch_shapes[b])}  # one shape per batch, the planned one
        shapes.append(tuple(ds.batch_shapes[b]))
    assert any(h != w for h, w in shapes) and max(max(s) for s in shapes) == 128
    for i in range(4):
        s = ds[(i, 1, True)]
        boxes = s["bboxes"].numpy() * np.array(s["img"].shape[1:][::-1] * 2)
        for k in range(len(s["cls"])):
            ys, xs = np.nonzero(s["masks"].numpy() == k + 1)
            if len(xs):
                cx, cy, w, h = boxes[k]
                assert xs.min() >= (cx - w / 2) / 4 - 1.01 and xs.max() <= (cx + w / 2) / 4 + 0.01
