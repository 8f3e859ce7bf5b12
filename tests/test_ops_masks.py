"""Mask decoding: compiled kernel vs the pure-torch reference, the face's checks, Ultralytics fixture."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from yoloseg import ops
from yoloseg.ops import reference as ref

C = pytest.importorskip("yoloseg._C")
if "masks" not in C.families:
    pytest.skip("compiled mask kernel not built", allow_module_level=True)

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "ultralytics"


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_case(n, proto_hw, out_hw, seed, nm=32, outside=True):
    """Smooth prototypes (like a trained model's), coefficients, boxes incl. awkward ones."""
    g = torch.Generator().manual_seed(seed)
    mh, mw = proto_hw
    h, w = out_hw
    protos = F.interpolate(torch.randn(1, nm, 12, 12, generator=g), size=(mh, mw), mode="bilinear")[0]
    protos += 0.05 * torch.randn(nm, mh, mw, generator=g)
    coeffs = torch.randn(n, nm, generator=g)
    centre = torch.rand(n, 2, generator=g) * torch.tensor([w, h])
    size = torch.rand(n, 2, generator=g) * torch.tensor([w, h]) * 0.6 + 1.5
    boxes = torch.cat([centre - size / 2, centre + size / 2], 1)
    if n >= 8:
        boxes[0] = torch.tensor([-50.0, -20.0, w * 0.4, h * 0.5])  # partly outside, top-left
        boxes[1] = torch.tensor([w * 0.6, h * 0.7, w + 90.0, h + 3.5])  # partly outside, bottom-right
        boxes[2] = torch.tensor([10.0, 10.0, 10.0, 60.0])  # zero width
        boxes[3] = torch.tensor([12.3, 40.0, 80.7, 40.0])  # zero height
        boxes[4] = torch.tensor([-100.0, -100.0, -10.0, -10.0])  # entirely outside
        boxes[5] = torch.tensor([0.0, 0.0, float(w), float(h)])  # whole image
        boxes[6] = torch.tensor([30.0, 30.0, 5.0, 5.0])  # inverted
        boxes[7] = torch.tensor([7.5, 3.25, 8.5, 4.75])  # sub-pixel
    return protos, coeffs, boxes


def per_mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    inter = (a & b).flatten(1).sum(1).double()
    union = (a | b).flatten(1).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def assert_masks_match(got, want, min_iou=0.999):
    assert got.dtype == torch.bool and got.shape == want.shape
    if len(got):
        iou = per_mask_iou(got, want)
        assert iou.min() >= min_iou, f"worst mask IoU {iou.min():.5f} (mask {int(iou.argmin())})"


@pytest.mark.parametrize(
    "n, proto_hw, out_hw, seed",
    [
        (0, (160, 160), (640, 640), 1),
        (1, (160, 160), (640, 640), 2),
        (300, (160, 160), (640, 640), 3),
        (60, (112, 160), (448, 640), 4),
        (40, (7, 5), (30, 21), 5),  # tiny protos, non-integer scale
        (20, (1, 1), (9, 13), 6),  # a single proto pixel
        (20, (40, 40), (40, 40), 7),  # same size: no resampling
    ],
)
def test_process_mask_matches_reference(n, proto_hw, out_hw, seed):
    protos, coeffs, boxes = make_case(n, proto_hw, out_hw, seed)
    got = ops.process_mask(protos, coeffs, boxes, out_hw)
    assert got.shape == (n, *out_hw)
    assert_masks_match(got, ref.process_mask(protos, coeffs, boxes, out_hw))
    if n > 2:
        assert got[2:5].sum() == 0  # zero-area and fully outside boxes give empty masks
        assert got[1][: int(out_hw[0] * 0.7) - 1].sum() == 0  # crop holds outside the box


def test_process_mask_without_upsample_matches_reference():
    protos, coeffs, boxes = make_case(50, (112, 160), (448, 640), 8)
    got = ops.process_mask(protos, coeffs, boxes, (448, 640), upsample=False)
    assert got.shape == (50, 112, 160)
    assert_masks_match(got, ref.process_mask(protos, coeffs, boxes, (448, 640), upsample=False))


@pytest.mark.parametrize(
    "n, proto_hw, orig_hw, seed, factor",
    [
        (0, (160, 160), (1080, 810), 10, 1),
        (40, (160, 160), (1080, 810), 11, 1),  # padding on whole proto pixels
        (60, (112, 160), (400, 600), 12, 4),  # the coffee.png geometry
        (40, (112, 160), (416, 600), 13, 2),
        (40, (112, 160), (448, 640), 14, 1),  # no letterbox at all
        (30, (160, 120), (1280, 960), 15, 1),
        (30, (30, 40), (97, 160), 16, None),
    ],
)
def test_process_mask_native_matches_reference(n, proto_hw, orig_hw, seed, factor):
    protos, coeffs, boxes = make_case(n, proto_hw, orig_hw, seed)
    if factor is not None:
        assert ref.native_plan(proto_hw, orig_hw)[0] == factor
    got = ops.process_mask_native(protos, coeffs, boxes, orig_hw)
    assert got.shape == (n, *orig_hw)
    assert_masks_match(got, ref.process_mask_native(protos, coeffs, boxes, orig_hw))


def test_threads_do_not_change_the_result():
    protos, coeffs, boxes = make_case(64, (160, 160), (640, 640), 20)
    one = ops.process_mask(protos, coeffs, boxes, (640, 640))
    torch.set_num_threads(4)
    assert torch.equal(ops.process_mask(protos, coeffs, boxes, (640, 640)), one)


def test_resample_taps_equal_interpolating_an_identity():
    """The kernel's per-axis weights are exactly what F.interpolate does to unit impulses."""
    for out, proto, f, off, content in [(640, 160, 1, 0, 160), (400, 112, 4, 10, 427), (37, 9, 2, 1, 15)]:
        start, weight = C.resample_taps(out, proto, f, off, content)
        dense = np.zeros((out, proto))
        for d in range(out):
            for k in range(weight.shape[1]):
                if weight[d, k]:
                    dense[d, start[d] + k] += weight[d, k]
        eye = torch.eye(proto)[None, :, :, None]  # channel c = impulse at proto index c
        if f > 1:
            eye = F.interpolate(eye, scale_factor=(f, 1), mode="bilinear", align_corners=False)
        eye = F.interpolate(eye[:, :, off : off + content], size=(out, 1), mode="bilinear", align_corners=False)
        np.testing.assert_allclose(dense, eye[0, :, :, 0].T.numpy(), atol=1e-6)


def test_fixture_masks_match_ultralytics():
    path = FIXTURES / "yolo11n-seg-synth3-e100-predict.npz"
    if not path.exists():
        pytest.skip(f"fixture {path} not available")
    z = np.load(path)
    det = torch.from_numpy(z["nms_out"])
    proto = torch.from_numpy(z["proto"][0])
    h, w = proto.shape[1] * 4, proto.shape[2] * 4
    masks = ops.process_mask(proto, det[:, 6:], det[:, :4], (h, w))
    assert_masks_match(masks, ref.process_mask(proto, det[:, 6:], det[:, :4], (h, w)))
    kept = masks.flatten(1).any(1)  # Ultralytics drops detections whose mask is empty
    shape = tuple(int(v) for v in z["masks_data_shape"])
    want = torch.from_numpy(np.unpackbits(z["masks_data_packed"], axis=-1)[..., : shape[-1]].astype(bool))
    assert masks[kept].shape == want.shape
    assert_masks_match(masks[kept], want, min_iou=0.99)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda p, c, b: ops.process_mask(p[0], c, b, (64, 64)), "protos must be 3-D"),
        (lambda p, c, b: ops.process_mask(p, c[:, :5], b, (64, 64)), "coeffs must have shape"),
        (lambda p, c, b: ops.process_mask(p, c, b[:2], (64, 64)), "boxes must have shape"),
        (lambda p, c, b: ops.process_mask(p, c.long(), b, (64, 64)), "coeffs must be a floating"),
        (lambda p, c, b: ops.process_mask(p, c, b.clone().fill_(float("nan")), (64, 64)), "boxes contains NaN"),
        (lambda p, c, b: ops.process_mask(p, c, b, (0, 64)), "shape must be"),
        (lambda p, c, b: ops.process_mask(p, c, b, 64), "shape must be"),
        (lambda p, c, b: ops.process_mask_native(p, c, b.to("meta"), (64, 64)), "same device"),
        (lambda p, c, b: ops.process_mask_native(p.numpy(), c, b, (64, 64)), "protos must be a torch.Tensor"),
    ],
)
def test_bad_input_raises_value_error(call, match):
    protos, coeffs, boxes = make_case(3, (16, 16), (64, 64), 30)
    with pytest.raises(ValueError, match=match):
        call(protos, coeffs, boxes)


def test_custom_ops_opcheck():
    protos, coeffs, boxes = make_case(10, (16, 16), (64, 64), 31)
    torch.library.opcheck(torch.ops.yoloseg.process_mask.default, (protos, coeffs, boxes, 64, 64, True))
    torch.library.opcheck(torch.ops.yoloseg.process_mask_native.default, (protos, coeffs, boxes, 60, 50))
