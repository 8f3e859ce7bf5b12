"""Segmentation loss: parity with the reference fixture, empty targets, crowded index masks, gradients."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from yoloseg.loss import SegmentationLoss, complete_iou, dfl_loss

FIXTURE_DIR = Path(__file__).parent / "fixtures" / "loss"
REL_TOL = 1e-4


@pytest.fixture(scope="module")
def fixture():
    meta = json.loads((FIXTURE_DIR / "seg_loss.json").read_text())
    with np.load(FIXTURE_DIR / "seg_loss.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return meta, arrays


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _preds(arrays, scale=1.0, grad=False):
    feats = [torch.from_numpy(arrays[f"feat{i}"]).float() * scale for i in range(3)]
    coeffs = torch.from_numpy(arrays["coeffs"]).float()
    protos = torch.from_numpy(arrays["protos"]).float()
    if grad:
        feats = [f.requires_grad_(True) for f in feats]
        coeffs.requires_grad_(True)
        protos.requires_grad_(True)
    return feats, coeffs, protos


def _batch(arrays, case):
    return {k: torch.from_numpy(arrays[f"{case}/{k}"]) for k in ("batch_idx", "cls", "bboxes", "masks")}


def _loss(meta, overlap, **hyp):
    hyp = {**meta["hyp"], "overlap_mask": overlap, **hyp}
    return SegmentationLoss.from_params(meta["nc"], meta["stride"], reg_max=meta["reg_max"], nm=meta["nm"], hyp=hyp)


def _rel(a, b):
    a, b = float(a), float(b)
    if b == 0.0:
        return abs(a)
    return abs(a - b) / abs(b)


CASES = [
    "overlap",
    "no_overlap",
    "empty_image",
    "no_targets",
    "hires_masks_no_overlap",
    "overlap_sharp",
    "crowd_overlap",
]


@pytest.mark.parametrize("case", CASES)
def test_matches_reference(fixture, case):
    meta, arrays = fixture
    ref = meta["cases"][case]
    crit = _loss(meta, ref["overlap_mask"])
    total, items = crit(_preds(arrays, ref["feat_scale"]), _batch(arrays, case))
    assert items.shape == (4,) and not items.requires_grad
    for name, got, want in zip(meta["items_order"], items.tolist(), ref["items"]):
        assert _rel(got, want) <= REL_TOL, f"{case} {name}: {got} vs {want}"
    assert _rel(total, ref["total"]) <= REL_TOL
    # total is the sum of the items times the batch size
    assert _rel(total, items.sum() * 2) <= 1e-6


def test_fixture_cases_are_all_tested(fixture):
    meta, _ = fixture
    assert sorted(meta["cases"]) == sorted(CASES)
    # the fixture exercises a real assignment: several instances per image, one image without targets
    assert meta["cases"]["crowd_overlap"]["n_targets"] > 255
    assert meta["cases"]["empty_image"]["items"][1] > 0


def test_gradients_match_reference(fixture):
    meta, arrays = fixture
    feats, coeffs, protos = _preds(arrays, grad=True)
    total, _ = _loss(meta, True)((feats, coeffs, protos), _batch(arrays, "overlap"))
    total.backward()
    pairs = [(f.grad, arrays[f"overlap/grad_feat{i}"]) for i, f in enumerate(feats)]
    pairs.append((coeffs.grad, arrays["overlap/grad_coeffs"]))
    for got, want in pairs:
        want = torch.from_numpy(want)
        assert (got - want).abs().max() <= REL_TOL * want.abs().max()
    want = torch.from_numpy(arrays["overlap/grad_protos"].astype(np.float32))  # stored as float16
    assert (protos.grad - want).abs().max() <= 2e-3 * want.abs().max()


def test_no_targets_gives_only_class_loss(fixture):
    meta, arrays = fixture
    feats, coeffs, protos = _preds(arrays, grad=True)
    batch = {
        "batch_idx": torch.zeros(0),
        "cls": torch.zeros(0, 1),
        "bboxes": torch.zeros(0, 4),
        "masks": torch.zeros(2, 32, 40, dtype=torch.int32),
    }
    total, items = _loss(meta, True)((feats, coeffs, protos), batch)
    box, seg, cls, dfl = items.tolist()
    assert box == 0 and seg == 0 and dfl == 0
    # all targets are zero and the normaliser is 1: the class loss is the plain BCE sum against zeros
    logits = torch.cat([f.detach().reshape(2, 67, -1)[:, 64:] for f in feats], 2)
    expected = torch.nn.functional.softplus(logits.double()).sum() * meta["hyp"]["cls"]
    # BCE-with-logits rounds log(1 + tiny) in float32 for these very negative logits: about 1e-5 relative
    assert _rel(cls, expected) <= REL_TOL
    total.backward()
    assert coeffs.grad is not None and torch.count_nonzero(coeffs.grad) == 0
    assert protos.grad is not None and torch.count_nonzero(protos.grad) == 0
    assert all(torch.isfinite(f.grad).all() for f in feats)


def _crowd(n: int, h: int = 32, w: int = 40):
    """n instances on a (h, w) grid of 2x1-pixel cells, in one image of a batch of 2; image 1 gets one box."""
    idx = torch.zeros(2, h, w, dtype=torch.int64)
    boxes = []
    k = 0
    for r in range(0, h, 2):
        for c in range(0, w, 1):
            if k == n:
                break
            idx[0, r : r + 2, c] = k + 1
            boxes.append([(c + 0.5) / w, (r + 1) / h, 1 / w, 2 / h])
            k += 1
    assert k == n, "grid too small"
    idx[1, 10:20, 10:30] = 1
    boxes.append([20 / w, 15 / h, 20 / w, 10 / h])
    bidx = torch.tensor([0] * n + [1], dtype=torch.float32)
    cls = (torch.arange(n + 1) % 3).float().view(-1, 1)
    return idx, torch.tensor(boxes, dtype=torch.float32), bidx, cls


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_overlap_masks_beyond_255_instances(fixture, dtype):
    meta, arrays = fixture
    n = 300
    idx, boxes, bidx, cls = _crowd(n)
    preds = _preds(arrays)
    over = {"batch_idx": bidx, "cls": cls, "bboxes": boxes, "masks": idx.to(dtype)}
    # the same instances as one binary mask each: the layout must not change the loss
    inst = torch.cat([idx[0:1] == (torch.arange(n) + 1).view(-1, 1, 1), idx[1:2] == 1]).to(torch.uint8)
    separate = {"batch_idx": bidx, "cls": cls, "bboxes": boxes, "masks": inst}
    _, items_over = _loss(meta, True)(preds, over)
    _, items_sep = _loss(meta, False)(preds, separate)
    assert items_over[1] > 0
    assert torch.allclose(items_over, items_sep, rtol=1e-6, atol=0)
    # a uint8 index map cannot hold these instances: refused instead of wrapping around
    with pytest.raises(ValueError, match="int32 or int64"):
        _loss(meta, True)(preds, {**over, "masks": idx.to(torch.uint8)})


def test_unsorted_batch_idx_is_grouped_by_image(fixture):
    meta, arrays = fixture
    batch = _batch(arrays, "no_overlap")
    bidx = batch["batch_idx"]
    # interleave the two images' labels while keeping each image's own order
    order0, order1 = (bidx == 0).nonzero().squeeze(1), (bidx == 1).nonzero().squeeze(1)
    order = torch.stack([order0[: len(order1)], order1], 1).reshape(-1)
    order = torch.cat([order, order0[len(order1) :]])
    shuffled = {k: v[order] for k, v in batch.items()}
    _, want = _loss(meta, False)(_preds(arrays), batch)
    _, got = _loss(meta, False)(_preds(arrays), shuffled)
    assert torch.equal(got, want)


def test_gradients_are_finite_and_reach_every_input(fixture):
    meta, arrays = fixture
    torch.manual_seed(0)
    feats, coeffs, protos = _preds(arrays)
    feats = [(f + torch.randn_like(f)).requires_grad_(True) for f in feats]
    coeffs = (coeffs * 3).requires_grad_(True)
    protos = (protos * 3).requires_grad_(True)
    total, items = _loss(meta, True)((feats, coeffs, protos), _batch(arrays, "crowd_overlap"))
    assert torch.isfinite(items).all() and torch.isfinite(total)
    total.backward()
    for t in [*feats, coeffs, protos]:
        assert torch.isfinite(t.grad).all()
        assert t.grad.abs().sum() > 0


def test_gains_scale_their_items(fixture):
    meta, arrays = fixture
    preds, batch = _preds(arrays), _batch(arrays, "overlap")
    _, base = _loss(meta, True)(preds, batch)
    _, scaled = _loss(meta, True, box=1.0, cls=1.0, dfl=1.0)(preds, batch)
    gains = torch.tensor([7.5, 7.5, 0.5, 1.5])  # the mask term uses the box gain
    assert torch.allclose(scaled * gains, base, rtol=1e-6)


def test_built_from_model_head_and_args(fixture):
    meta, arrays = fixture
    head = SimpleNamespace(nc=3, stride=torch.tensor([8.0, 16.0, 32.0]), reg_max=16, nm=32)
    model = SimpleNamespace(model=[object(), head], args=SimpleNamespace(box=7.5, cls=0.5, dfl=1.5, overlap_mask=False))
    crit = SegmentationLoss(model)
    assert (crit.nc, crit.reg_max, crit.nm, crit.stride, crit.overlap) == (3, 16, 32, [8.0, 16.0, 32.0], False)
    ref = meta["cases"]["no_overlap"]
    _, items = crit(_preds(arrays), _batch(arrays, "no_overlap"))
    assert all(_rel(g, w) <= REL_TOL for g, w in zip(items.tolist(), ref["items"]))
    # an explicit hyp wins over model.args
    assert SegmentationLoss(model, hyp={"overlap_mask": True}).overlap is True


def test_bad_inputs_are_named(fixture):
    meta, arrays = fixture
    crit = _loss(meta, True)
    preds, batch = _preds(arrays), _batch(arrays, "overlap")
    with pytest.raises(ValueError, match="feats"):
        crit((preds[0][:2], preds[1], preds[2]), batch)
    with pytest.raises(ValueError, match="batch_idx"):
        crit(preds, {**batch, "batch_idx": batch["batch_idx"] + 5})
    with pytest.raises(ValueError, match="overlap masks"):
        crit(preds, {**batch, "masks": batch["masks"][:1]})
    with pytest.raises(ValueError, match="cls"):
        crit(preds, {**batch, "cls": batch["cls"][:3]})
    with pytest.raises(ValueError, match="nc"):
        SegmentationLoss.from_params(0, [8, 16, 32])
    with pytest.raises(ValueError, match="stride"):
        SegmentationLoss.from_params(3, [0, 0, 0])


def test_complete_iou_known_values():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    assert abs(complete_iou(a, a).item() - 1.0) < 1e-6
    # same shape, shifted by half a side: IoU 1/3, centre distance 25, enclosing diagonal 15^2 + 10^2
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0]])
    assert abs(complete_iou(a, b).item() - (1 / 3 - 25 / 325)) < 1e-5
    # disjoint and far: negative
    c = torch.tensor([[100.0, 100.0, 110.0, 130.0]])
    assert complete_iou(a, c).item() < 0


def test_dfl_on_a_bin_is_the_cross_entropy_of_that_bin():
    logits = torch.randn(3, 4, 16)
    target = torch.tensor([[2.0, 5.0, 0.0, 14.0]]).expand(3, 4)
    want = -torch.log_softmax(logits, -1).gather(-1, target.long().unsqueeze(-1)).squeeze(-1).mean(-1, keepdim=True)
    assert torch.allclose(dfl_loss(logits, target, 16), want, atol=1e-6)
    # halfway between bins 3 and 4: the mean of the two cross-entropies
    half = dfl_loss(logits, torch.full((3, 4), 3.5), 16)
    lp = torch.log_softmax(logits, -1)
    assert torch.allclose(half, -(0.5 * lp[..., 3] + 0.5 * lp[..., 4]).mean(-1, keepdim=True), atol=1e-6)


def _dense_mask_loss(fg, gt_index, boxes_px, masks, overlap, bidx, protos, coeffs, imgsz):
    """Straightforward mask loss: full-size logits per positive anchor, BCE, crop, mean, / box area."""
    bs, nm, h, w = protos.shape
    total = 0.0
    for i in range(bs):
        for a in fg[i].nonzero().squeeze(1).tolist():
            k = int(gt_index[i, a])
            gt = (masks[i] == k + 1) if overlap else masks[bidx == i][k].bool()
            logits = torch.einsum("c,chw->hw", coeffs[i, :, a], protos[i])
            bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, gt.to(logits.dtype), reduction="none")
            box_n = boxes_px[i, a] / imgsz.repeat(2)  # fractions of the image width, height
            x1, y1, x2, y2 = (box_n * torch.tensor([w, h, w, h], dtype=box_n.dtype)).tolist()
            cols, rows = torch.arange(w, dtype=logits.dtype), torch.arange(h, dtype=logits.dtype)
            inside = ((cols >= x1) & (cols < x2))[None, :] & ((rows >= y1) & (rows < y2))[:, None]
            bw, bh = box_n[2] - box_n[0], box_n[3] - box_n[1]
            total = total + (bce * inside).mean() / (bw * bh)
    return total / fg.sum()


@pytest.mark.parametrize("overlap", [True, False])
def test_windowed_mask_loss_matches_dense_reference(overlap):
    gen = torch.Generator().manual_seed(3)
    bs, nm, h, w, n_anchors, n_inst = 2, 8, 12, 16, 40, 5
    imgsz = torch.tensor([64.0, 48.0], dtype=torch.float64)  # width, height in pixels (4x the mask grid)
    protos = torch.randn(bs, nm, h, w, generator=gen, dtype=torch.float64, requires_grad=True)
    coeffs = torch.randn(bs, nm, n_anchors, generator=gen, dtype=torch.float64, requires_grad=True)
    # instance boxes with fractional edges, one sticking out of the image, one thinner than a mask pixel
    inst_boxes = torch.tensor(
        [
            [3.3, 2.0, 30.7, 20.1],
            [20.0, 10.5, 70.0, 60.0],
            [8.0, 30.0, 9.5, 40.0],
            [0.0, 0.0, 64.0, 48.0],
            [40.2, 5.1, 52.9, 33.3],
        ],
        dtype=torch.float64,
    )
    fg = torch.rand(bs, n_anchors, generator=gen) < 0.5
    gt_index = torch.randint(0, n_inst, (bs, n_anchors), generator=gen)
    boxes_px = inst_boxes[gt_index]
    bidx = torch.tensor([0] * n_inst + [1] * n_inst, dtype=torch.float32)
    if overlap:
        masks = torch.randint(0, n_inst + 1, (bs, h, w), generator=gen, dtype=torch.int32)
    else:
        masks = (torch.rand(bs * n_inst, h, w, generator=gen) < 0.4).to(torch.uint8)
    crit = SegmentationLoss.from_params(3, [8, 16, 32], nm=nm, hyp={"overlap_mask": overlap})
    batch = {"masks": masks, "batch_idx": bidx}
    imgsz_hw = imgsz.flip(0)  # the loss takes (height, width)
    got = crit.mask_loss(fg, gt_index, boxes_px, batch, protos, coeffs, imgsz_hw)
    g_p, g_c = torch.autograd.grad(got, (protos, coeffs))
    want = _dense_mask_loss(fg, gt_index, boxes_px, masks, overlap, bidx.long(), protos, coeffs, imgsz)
    w_p, w_c = torch.autograd.grad(want, (protos, coeffs))
    assert torch.allclose(got, want, rtol=1e-10)
    assert torch.allclose(g_p, w_p, rtol=1e-9, atol=1e-12)
    assert torch.allclose(g_c, w_c, rtol=1e-9, atol=1e-12)


def test_half_precision_inputs_give_float32_mask_loss(fixture):
    meta, arrays = fixture
    feats, coeffs, protos = _preds(arrays)
    coeffs16 = coeffs.half().requires_grad_(True)
    protos16 = protos.half().requires_grad_(True)
    ref = meta["cases"]["overlap"]["items"]
    _, items = _loss(meta, True)((feats, coeffs16, protos16), _batch(arrays, "overlap"))
    # the fixture tensors are float16-exact, so the mask term is unchanged
    assert _rel(items[1], ref[1]) <= REL_TOL
    total, _ = _loss(meta, True)((feats, coeffs16, protos16), _batch(arrays, "overlap"))
    total.backward()
    assert coeffs16.grad.dtype == torch.float16 and torch.isfinite(protos16.grad).all()


def test_with_the_yoloseg_model():
    from yoloseg.nn import SegmentationModel

    torch.manual_seed(0)
    model = SegmentationModel("yolo11n-seg.yaml", nc=3)
    model.train()
    preds = model(torch.rand(2, 3, 128, 160))
    masks = torch.zeros(2, 32, 40, dtype=torch.int32)
    masks[0, 10:20, 10:30] = 1
    masks[0, 5:12, 5:12] = 2
    masks[1, 5:25, 10:35] = 1
    batch = {
        "batch_idx": torch.tensor([0.0, 0.0, 1.0]),
        "cls": torch.tensor([[0.0], [1.0], [2.0]]),
        "bboxes": torch.tensor([[0.5, 0.47, 0.5, 0.31], [0.26, 0.27, 0.18, 0.22], [0.56, 0.47, 0.63, 0.63]]),
        "masks": masks,
    }
    total, items = SegmentationLoss(model)(preds, batch)
    assert torch.isfinite(total) and (items > 0).all()
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.model[0].conv.weight.grad.abs().sum() > 0
