"""NMS: compiled kernel vs the pure-torch reference, the Python face, and Ultralytics fixtures."""

from pathlib import Path

import numpy as np
import pytest
import torch
from tolerances import PIXEL_ATOL, PIXEL_RTOL, xyxy_magnitude

from yoloseg import ops
from yoloseg.ops import reference as ref

C = pytest.importorskip("yoloseg._C")

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "ultralytics"
METHODS = {"auto": 0, "pairwise": 1, "grid": 2}


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The reference runs thousands of tiny torch ops; intra-op threads only add contention there."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_boxes(n, seed, size=640.0, smin=4.0, smax=160.0):
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * (smax - smin) + smin
    return torch.cat([centre - wh / 2, centre + wh / 2], 1), torch.rand(n, generator=g)


def clustered_boxes(n, seed, clusters=50, jitter=6.0):
    """Heavily overlapping groups: most boxes get suppressed, the greedy order matters."""
    g = torch.Generator().manual_seed(seed)
    base, _ = random_boxes(clusters, seed + 1)
    pick = torch.randint(0, clusters, (n,), generator=g)
    boxes = base[pick] + (torch.rand(n, 4, generator=g) - 0.5) * jitter
    return boxes, torch.rand(n, generator=g)


def compiled_nms(boxes, scores, thr, method):
    return torch.from_numpy(C.nms(boxes.numpy(), scores.numpy(), thr, method, 1))


def compiled_batched(boxes, scores, idxs, thr, method, threads=1):
    return torch.from_numpy(C.batched_nms(boxes.numpy(), scores.numpy(), idxs.numpy(), thr, method, threads))


def adversarial_cases():
    cases = {}
    b, s = random_boxes(300, 1)
    cases["score_ties"] = (b, (s * 4).floor() / 4)  # four distinct scores only
    one = torch.tensor([[10.0, 10.0, 50.0, 60.0]])
    cases["identical_boxes"] = (one.repeat(40, 1), torch.rand(40, generator=torch.Generator().manual_seed(2)))
    cases["identical_boxes_equal_scores"] = (one.repeat(40, 1), torch.full((40,), 0.5))
    zb, zs = random_boxes(200, 3)
    zb[::3, 2] = zb[::3, 0]  # zero width
    zb[1::3, 3] = zb[1::3, 1]  # zero height
    cases["zero_area"] = (zb, zs)
    cases["all_zero_area_same_point"] = (torch.tensor([[5.0, 5.0, 5.0, 5.0]]).repeat(10, 1), torch.rand(10))
    ib, is_ = random_boxes(100, 4)
    ib[::2] = ib[::2][:, [2, 3, 0, 1]]  # inverted corners
    cases["inverted"] = (ib, is_)
    cases["empty"] = (torch.zeros(0, 4), torch.zeros(0))
    cases["one_box"] = (one, torch.tensor([0.3]))
    nb, ns = random_boxes(500, 5, size=2000.0)
    cases["negative_coords"] = (nb - 1000.0, ns)
    mb, ms = random_boxes(600, 6, smin=1.0, smax=600.0)
    cases["mixed_sizes"] = (mb, ms)
    cases["signed_zero_scores"] = (random_boxes(50, 7)[0], torch.tensor([0.0, -0.0] * 25))
    cases["clustered"] = clustered_boxes(2000, 8)
    cases["large_offsets"] = (random_boxes(800, 9)[0] + 1.0e5, random_boxes(800, 9)[1])
    return cases


CASES = adversarial_cases()


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("thr", [0.0, 0.3, 0.5, 0.7, 0.95, 1.0])
def test_nms_matches_reference(case, thr):
    boxes, scores = CASES[case]
    expected = ref.nms(boxes, scores, thr)
    for name, method in METHODS.items():
        assert torch.equal(compiled_nms(boxes, scores, thr, method), expected), name


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n", [1, 2, 17, 383, 384, 1000, 5000])
def test_nms_random_matches_reference(n, seed):
    boxes, scores = random_boxes(n, seed)
    thr = [0.45, 0.5, 0.65, 0.7][seed]
    expected = ref.nms(boxes, scores, thr)
    for method in METHODS.values():
        assert torch.equal(compiled_nms(boxes, scores, thr, method), expected)


def test_nms_50k_boxes():
    boxes, scores = clustered_boxes(50_000, 11, clusters=400)
    expected = ref.nms(boxes, scores, 0.7)
    for method in METHODS.values():
        assert torch.equal(compiled_nms(boxes, scores, 0.7, method), expected)
    assert torch.equal(ops.nms(boxes, scores, 0.7), expected)


@pytest.mark.slow
def test_nms_50k_spread_boxes():
    boxes, scores = random_boxes(50_000, 12, size=4000.0)
    expected = ref.nms(boxes, scores, 0.7)
    for method in (0, 2):
        assert torch.equal(compiled_nms(boxes, scores, 0.7, method), expected)


def test_grid_and_pairwise_agree_on_large_inputs():
    """Independent of the reference: the two compiled strategies must take identical decisions."""
    for seed, thr in [(20, 0.25), (21, 0.5), (22, 0.7), (23, 0.9)]:
        boxes, scores = random_boxes(30_000, seed, smin=2.0, smax=300.0)
        assert torch.equal(compiled_nms(boxes, scores, thr, 1), compiled_nms(boxes, scores, thr, 2))


def test_nms_order_and_ties():
    boxes = torch.tensor([[0, 0, 10, 10], [100, 100, 110, 110], [200, 200, 210, 210], [0, 0, 10, 10.0]])
    scores = torch.tensor([0.5, 0.9, 0.5, 0.5])
    keep = ops.nms(boxes, scores, 0.5)
    # descending score; equal scores by lower index; box 3 duplicates box 0 (kept first) -> dropped
    assert keep.tolist() == [1, 0, 2]
    assert keep.dtype == torch.int64


@pytest.mark.parametrize("case", ["random", "ties", "clustered", "many_classes"])
@pytest.mark.parametrize("method", list(METHODS))
def test_batched_nms_matches_reference(case, method):
    g = torch.Generator().manual_seed(30)
    if case == "clustered":
        boxes, scores = clustered_boxes(3000, 31)
    else:
        boxes, scores = random_boxes(3000, 32)
    if case == "ties":
        scores = (scores * 8).floor() / 8
    ncls = 1000 if case == "many_classes" else 80
    idxs = torch.randint(0, ncls, (boxes.shape[0],), generator=g)
    expected = ref.batched_nms(boxes, scores, idxs, 0.6)
    assert torch.equal(compiled_batched(boxes, scores, idxs, 0.6, METHODS[method]), expected)


def test_batched_nms_sparse_and_negative_class_ids_and_threads():
    boxes, scores = clustered_boxes(25_000, 40, clusters=30)
    g = torch.Generator().manual_seed(41)
    idxs = torch.tensor([-(2**40), -3, 7, 2**50])[torch.randint(0, 4, (boxes.shape[0],), generator=g)]
    expected = ref.batched_nms(boxes, scores, idxs, 0.5)
    assert torch.equal(compiled_batched(boxes, scores, idxs, 0.5, 0, threads=1), expected)
    assert torch.equal(compiled_batched(boxes, scores, idxs, 0.5, 0, threads=4), expected)


def test_batched_nms_face_classes_are_independent():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert ops.batched_nms(boxes, scores, torch.tensor([0, 1, 0]), 0.5).tolist() == [0, 1]
    assert ops.batched_nms(boxes, scores, torch.tensor([0.0, 1.0, 0.0]), 0.5).tolist() == [0, 1]
    assert ops.batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).numel() == 0


def test_face_accepts_other_float_dtypes():
    boxes, scores = random_boxes(500, 50)
    expected = ref.nms(boxes, scores, 0.5)
    assert torch.equal(ops.nms(boxes.double(), scores.double(), 0.5), expected)
    assert torch.equal(ops.nms(boxes[:, :].T.contiguous().T, scores, 0.5), expected)  # non-contiguous


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: ops.nms(torch.zeros(3, 5), torch.zeros(3), 0.5), "boxes must have shape"),
        (lambda: ops.nms(torch.zeros(3, 4), torch.zeros(4), 0.5), "scores must have shape"),
        (lambda: ops.nms(torch.zeros(3, 4, dtype=torch.int64), torch.zeros(3), 0.5), "boxes must be a floating"),
        (lambda: ops.nms(np.zeros((3, 4)), torch.zeros(3), 0.5), "boxes must be a torch.Tensor"),
        (lambda: ops.nms(torch.tensor([[0, 0, float("nan"), 1]]), torch.zeros(1), 0.5), "boxes contains NaN"),
        (lambda: ops.nms(torch.tensor([[0, 0, float("inf"), 1]]), torch.zeros(1), 0.5), "boxes contains NaN"),
        (lambda: ops.nms(torch.zeros(1, 4), torch.tensor([float("nan")]), 0.5), "scores contains NaN"),
        (lambda: ops.nms(torch.zeros(1, 4), torch.zeros(1), float("nan")), "iou_threshold"),
        (lambda: ops.nms(torch.zeros(1, 4), torch.zeros(1, device="meta"), 0.5), "same device"),
        (lambda: ops.batched_nms(torch.zeros(2, 4), torch.zeros(2), torch.tensor([0.5, 1.0]), 0.5), "whole numbers"),
        (lambda: ops.batched_nms(torch.zeros(2, 4), torch.zeros(2), torch.zeros(3), 0.5), "idxs must have shape"),
        (lambda: ops.non_max_suppression(torch.zeros(1, 36, 10)), "pred must have shape"),
        (lambda: ops.non_max_suppression(torch.zeros(1, 40, 10), conf_thres=1.5), "conf_thres"),
        (lambda: ops.non_max_suppression(torch.zeros(1, 40, 10), iou_thres=-0.1), "iou_thres"),
        (lambda: ops.non_max_suppression(torch.zeros(40, 10)), "pred must be 3-D"),
        (lambda: ops.non_max_suppression(torch.zeros(1, 40, 10), max_det=-1), "max_det"),
    ],
)
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_custom_ops_opcheck():
    boxes, scores = clustered_boxes(200, 60)
    idxs = torch.randint(0, 5, (200,), generator=torch.Generator().manual_seed(61))
    torch.library.opcheck(torch.ops.yoloseg.nms.default, (boxes, scores, 0.5))
    torch.library.opcheck(torch.ops.yoloseg.batched_nms.default, (boxes, scores, idxs, 0.5))


def test_custom_op_exports():
    class Keep(torch.nn.Module):
        def forward(self, boxes, scores):
            return torch.ops.yoloseg.nms(boxes, scores, 0.5)

    boxes, scores = clustered_boxes(100, 62)
    ep = torch.export.export(Keep(), (boxes, scores))
    assert "yoloseg.nms" in str(ep.graph)
    assert torch.equal(ep.module()(boxes, scores), ref.nms(boxes, scores, 0.5))


# --- non_max_suppression ----------------------------------------------------------------------------


def random_pred(batch=2, nc=5, nm=32, anchors=3000, seed=70):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(batch, 2, anchors, generator=g) * 640
    wh = torch.rand(batch, 2, anchors, generator=g) * 120 + 4
    cls = torch.rand(batch, nc, anchors, generator=g) ** 4
    coef = torch.randn(batch, nm, anchors, generator=g)
    return torch.cat([xy, wh, cls, coef], 1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"conf_thres": 0.001, "iou_thres": 0.5},
        {"agnostic": True},
        {"classes": [1, 3]},
        {"max_det": 7},
        {"conf_thres": 0.999},
    ],
)
def test_non_max_suppression_matches_reference(kwargs):
    pred = random_pred()
    got = ops.non_max_suppression(pred, **kwargs)
    expected = ref.non_max_suppression(pred, **{"conf_thres": 0.25, "iou_thres": 0.7, **kwargs})
    assert len(got) == len(expected) == pred.shape[0]
    for a, b in zip(got, expected):
        assert a.shape[1] == 6 + 32 and a.dtype == torch.float32
        assert torch.equal(a, b)
        if "classes" in kwargs and len(a):
            assert set(a[:, 5].long().tolist()) <= set(kwargs["classes"])
        assert torch.all(a[1:, 4] <= a[:-1, 4])


def test_non_max_suppression_nm_zero_and_tuple_input():
    pred = random_pred(batch=1, nm=0)
    got = ops.non_max_suppression((pred, None), nm=0)
    assert got[0].shape[1] == 6
    assert torch.equal(got[0], ref.non_max_suppression(pred, nm=0)[0])


def _match_rows(got: np.ndarray, want: np.ndarray):
    """Every fixture row has a row of ours with the same class, box within the xyxy pixel bound of
    tests/tolerances.py (the input is the fixture's own det, so only NMS's arithmetic differs), conf within
    1e-5."""
    assert got.shape == want.shape
    used = np.zeros(len(got), bool)
    box_bound = 1.5 * PIXEL_ATOL + PIXEL_RTOL * xyxy_magnitude(want[:, :4])
    for row, bound in zip(want, box_bound):
        close = (
            ~used
            & (got[:, 5] == row[5])
            & (np.abs(got[:, :4] - row[:4]) <= bound).all(1)
            & (np.abs(got[:, 4] - row[4]) < 1e-5)
        )
        assert close.any(), f"fixture detection {row[:6]} not found"
        j = np.flatnonzero(close)[0]
        assert np.abs(got[j, 6:] - row[6:]).max() < 1e-5
        used[j] = True


FIXTURE_RUNS = [
    ("yolo11n-seg-synth3-e100", "", 0.001),
    ("yolo11n-seg-synth3-e100", "conf2_", 0.05),
    ("yolo11n-seg-seed0", "", 0.001),
    ("yolo11n-seg-seed0", "lowconf_", 1e-4),
    ("yolo11n-seg-seed0-u830", "", 0.001),
    ("yolo11n-seg-seed0-u830", "conf2_", 1e-4),
]


@pytest.mark.parametrize("stem, prefix, conf", FIXTURE_RUNS)
def test_non_max_suppression_matches_ultralytics_fixture(stem, prefix, conf):
    path = FIXTURES / f"{stem}-predict.npz"
    if not path.exists():
        pytest.skip(f"fixture {path} not available")
    z = np.load(path)
    det = torch.from_numpy(z["det"])
    got = ops.non_max_suppression(det, conf_thres=conf, iou_thres=0.7, max_det=300)[0].numpy()
    want = z[prefix + "nms_out"]
    _match_rows(got, want)
    if stem.endswith("synth3-e100") and not prefix:
        assert len(want) == 300  # real detections: the parity is not vacuous
