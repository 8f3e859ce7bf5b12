"""Masks kept as packed crops (yoloseg.ops.mask_crops) vs the dense kernels they stand in for."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from yoloseg import ops
from yoloseg.engine.predictor import segment_postprocess
from yoloseg.engine.results import Masks, Results
from yoloseg.ops import reference
from yoloseg.ops.mask_crops import MaskCrops, available, decode_mask_crops

pytestmark = pytest.mark.skipif(not available(torch.zeros(1)), reason="compiled masks/contours kernels not built")


def detections(n=60, proto_hw=(40, 48), out_hw=(160, 192), seed=0):
    g = torch.Generator().manual_seed(seed)
    protos = F.interpolate(torch.randn(1, 32, 8, 8, generator=g), size=proto_hw, mode="bilinear")[0]
    coeffs = torch.randn(n, 32, generator=g)
    h, w = out_hw
    centre = torch.rand(n, 2, generator=g) * torch.tensor([w, h], dtype=torch.float32)
    side = torch.rand(n, 2, generator=g) * torch.tensor([w, h], dtype=torch.float32) * 0.6 + 0.3
    boxes = torch.cat([centre - side / 2, centre + side / 2], 1)  # some partly outside the grid
    boxes[0] = torch.tensor([5.0, 5.0, 5.0, 50.0])  # zero width
    boxes[1] = torch.tensor([-30.0, -30.0, w + 30.0, h + 30.0])  # the whole grid and more
    return protos, coeffs, boxes


@pytest.mark.parametrize("native", [False, True])
def test_crops_hold_exactly_the_dense_masks(native):
    protos, coeffs, boxes = detections()
    shape = (150, 170) if native else (160, 192)
    crops = decode_mask_crops(protos, coeffs, boxes, shape, native=native)
    dense = (ops.process_mask_native if native else ops.process_mask)(protos, coeffs, boxes, shape)
    assert crops.shape == tuple(dense.shape) and len(crops) == len(dense)
    assert torch.equal(crops.dense(), dense)
    np.testing.assert_array_equal(crops.windows, ops.polygons.mask_windows(dense))
    # regions are the pixels each box keeps; every crop byte is 0 or 1
    assert crops.crops.size == int(np.prod(crops.regions[:, 2:] - crops.regions[:, :2], axis=1).sum())
    assert set(np.unique(crops.crops).tolist()) <= {0, 1}
    assert crops.regions[0].tolist() == [0, 0, 0, 0] and crops.windows[0].tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("strategy", ["largest", "all"])
def test_polygons_from_crops_equal_the_dense_reference(strategy):
    protos, coeffs, boxes = detections(seed=4)
    crops = decode_mask_crops(protos, coeffs, boxes, (160, 192))
    pts, ends = crops.polygons_flat(strategy)
    want = reference.masks_to_polygons(crops.dense(), strategy)
    assert ends.tolist() == np.cumsum([len(p) for p in want]).tolist()
    np.testing.assert_array_equal(pts, np.concatenate(want))


def test_select_shares_the_buffer_and_keeps_order():
    protos, coeffs, boxes = detections(seed=2)
    crops = decode_mask_crops(protos, coeffs, boxes, (160, 192))
    dense = crops.dense()
    for idx in ([5, 2, 7], 3, slice(4, 10, 2), np.arange(len(crops)) % 3 == 0, torch.tensor([1, 0])):
        sub = crops.select(idx)
        assert sub.crops is crops.crops
        want = dense[[3]] if isinstance(idx, int) else dense[torch.as_tensor(idx) if not isinstance(idx, slice) else idx]
        assert torch.equal(sub.dense(), want)


def test_lazy_masks_behave_like_dense_masks():
    protos, coeffs, boxes = detections(seed=6)
    crops = decode_mask_crops(protos, coeffs, boxes, (160, 192))
    keep = crops.windows[:, 2] > crops.windows[:, 0]
    crops = crops.select(keep)
    lazy, plain = Masks(crops, (80, 96)), Masks(crops.dense(), (80, 96))
    assert lazy.shape == plain.shape and len(lazy) == len(plain)
    assert lazy._dense is None  # nothing dense was built for shape/len
    for a, b in zip(lazy.xy, plain.xy):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(lazy[torch.tensor([2, 0])].xyn, plain[[2, 0]].xyn):
        np.testing.assert_array_equal(a, b)
    assert lazy._dense is None  # polygons came from the crops
    assert torch.equal(lazy.data, plain.data) and lazy.data is lazy.data  # built once, then cached
    assert isinstance(lazy.numpy().data, np.ndarray) and lazy.cpu() is lazy
    assert torch.equal(lazy[1].data, plain[1].data)


@pytest.mark.parametrize("retina", [False, True])
def test_segment_postprocess_crops_equal_the_dense_path(retina):
    g = torch.Generator().manual_seed(3)
    a, nc, nm = 80, 2, 32
    xy = torch.rand(a, 2, generator=g) * 64
    wh = torch.rand(a, 2, generator=g) * 40 + 2
    pred = torch.cat([xy, wh, torch.rand(a, nc, generator=g), torch.randn(a, nm, generator=g)], 1).T[None]
    protos = torch.randn(1, nm, 16, 16, generator=g)
    orig = (50, 60)
    kw = dict(conf=0.1, retina_masks=retina)
    (dense,) = segment_postprocess((pred, protos), (64, 64), [orig], **kw)
    (lazy,) = segment_postprocess((pred, protos), (64, 64), [orig], crops=True, **kw)
    assert isinstance(lazy["masks"], MaskCrops) and len(lazy["masks"]) == len(dense["masks"]) > 5
    assert torch.equal(lazy["boxes"], dense["boxes"])
    assert torch.equal(lazy["masks"].dense(), dense["masks"])
    torch.testing.assert_close(lazy["mask_boxes"], dense["mask_boxes"])
    img = np.zeros((*orig, 3), np.uint8)
    r_lazy, r_dense = Results(img, "x.jpg", {0: "a", 1: "b"}, **lazy), Results(img, "x.jpg", {0: "a", 1: "b"}, **dense)
    for p, q in zip(r_lazy.masks.xy, r_dense.masks.xy):
        np.testing.assert_array_equal(p, q)
    np.testing.assert_array_equal(r_lazy.plot(), r_dense.plot())
    assert r_lazy.masks._dense is None  # drawn from the crops, no dense block built
    assert r_lazy.to_json() == r_dense.to_json()


def test_bad_input_is_checked_like_process_mask():
    protos, coeffs, boxes = detections()
    with pytest.raises(ValueError, match="boxes"):
        decode_mask_crops(protos, coeffs, boxes[:3], (160, 192))
    bad = boxes.clone()
    bad[4, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN|finite"):
        decode_mask_crops(protos, coeffs, bad, (160, 192))
    with pytest.raises(ValueError, match="shape"):
        decode_mask_crops(protos, coeffs, boxes, (0, 192))


def test_model_call_keeps_crops_until_data_is_read():
    """The facade's predict (task-resolved postprocess) hands MaskCrops to Results."""
    from pathlib import Path

    from yoloseg import YOLO

    fixtures = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
    weights, image = fixtures / "ultralytics" / "yolo11n-seg-synth3-e100.pt", fixtures / "images" / "coffee.png"
    if not (weights.exists() and image.exists()):
        pytest.skip("shared fixtures not available")
    (r,) = YOLO(str(weights))(str(image), conf=0.05, imgsz=640, verbose=False)
    assert len(r) == 4 and r.masks._crops is not None and r.masks._dense is None
    assert r.masks.shape == (4, 448, 640) and len(r.masks.xy) == 4 and r.masks._dense is None
    assert r.masks.data.shape == (4, 448, 640) and r.masks.data.dtype == torch.bool
