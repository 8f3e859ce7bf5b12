"""End-to-end ONNX graphs (NMS and mask assembly inside) against our Python postprocess.

Oracle: ``yoloseg.ops.non_max_suppression`` + ``yoloseg.ops.process_mask(upsample=False)`` on the PyTorch
model's raw outputs for the same input (the graph's masks are at prototype resolution, see
yoloseg/engine/end2end.py). Weights: the trained synth3 checkpoint on coffee.png (4 detections at conf 0.05,
300 at conf 0.001). A hand-made prediction tensor pins the threshold edge cases (score equal to conf, IoU
equal to the NMS threshold, ties across classes) that ONNX NonMaxSuppression must resolve as we do.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import pytest
import torch
from tolerances import assert_close_result_boxes, assert_close_xyxy

ort = pytest.importorskip("onnxruntime")

SHARED = Path(os.environ.get("YOLOSEG_SHARED", Path(__file__).resolve().parents[2] / "shared"))
WEIGHTS = SHARED / "fixtures" / "ultralytics" / "yolo11n-seg-synth3-e100.pt"
COFFEE = SHARED / "fixtures" / "images" / "coffee.png"
needs_fixtures = pytest.mark.skipif(not WEIGHTS.exists() or not COFFEE.exists(), reason="no shared fixtures")


@pytest.fixture(scope="module")
def wdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("e2e")
    if WEIGHTS.exists():
        shutil.copy(WEIGHTS, d / "synth3.pt")
    return d


@pytest.fixture(scope="module")
def yolo(wdir):
    from yoloseg import YOLO

    return YOLO(str(wdir / "synth3.pt"))


def _letterboxed(size, flip=False):
    from yoloseg.data.letterbox import LetterBox

    img = cv2.imread(str(COFFEE))
    if flip:
        img = img[:, ::-1].copy()
    x = LetterBox(size, auto=False, stride=32)(img)[0]
    return torch.from_numpy(x[None]).permute(0, 3, 1, 2).flip(1).float() / 255


def _run(path, x):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    assert names == ["num_dets", "boxes", "scores", "classes", "masks"]
    return [torch.from_numpy(o) for o in sess.run(None, {"images": x.numpy()})]


def _reference(pred, protos, conf, iou=0.7, max_det=300):
    from yoloseg import ops

    out = []
    for i, det in enumerate(ops.non_max_suppression(pred, conf, iou, max_det=max_det, nm=protos.shape[1])):
        masks = ops.process_mask(protos[i], det[:, 6:], det[:, :4], (4 * protos.shape[2], 4 * protos.shape[3]),
                                 upsample=False)
        out.append((det, masks))
    return out


def _assert_matches(outs, refs, max_det):
    num, boxes, scores, classes, masks = outs
    for b, (det, ref_masks) in enumerate(refs):
        n = int(num[b])
        assert n == len(det)
        assert_close_xyxy(boxes[b, :n], det[:, :4], "end2end boxes")  # letterboxed-input pixels
        torch.testing.assert_close(scores[b, :n], det[:, 4], atol=1e-5, rtol=0)
        assert torch.equal(classes[b, :n], det[:, 5].long())
        # padding rows: zeros and class -1
        assert not boxes[b, n:].any() and not scores[b, n:].any() and bool((classes[b, n:] == -1).all())
        assert not masks[b, n:].any()
        got = masks[b, :n] > 0.5
        inter = (got & ref_masks).flatten(1).sum(1).float()
        union = (got | ref_masks).flatten(1).sum(1).float()
        ious = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
        assert float(ious.min()) >= 0.99, ious.min()
        assert boxes.shape[1] == max_det


@needs_fixtures
@pytest.mark.parametrize("conf", [0.05, 0.001])
def test_end2end_matches_python_postprocess(yolo, wdir, conf):
    path = yolo.export(format="onnx", end2end=True, conf=conf, iou=0.7, imgsz=640, verbose=False)
    assert path.endswith("_end2end.onnx")
    import onnx

    graph = onnx.load(path).graph
    assert any(n.op_type == "NonMaxSuppression" for n in graph.node)
    x = _letterboxed(640)
    with torch.inference_mode():
        pred, protos = yolo.model.eval()(x)
    refs = _reference(pred, protos, conf)
    assert len(refs[0][0]) == (4 if conf == 0.05 else 300)  # the fixture's counts (see fixtures README)
    outs = _run(path, x)
    assert outs[4].shape == (1, 300, 160, 160)
    _assert_matches(outs, refs, 300)


@needs_fixtures
def test_end2end_dynamic_batch2_and_predict(yolo, wdir):
    from yoloseg import YOLO

    path = yolo.export(format="onnx", end2end=True, conf=0.05, imgsz=320, dynamic=True, max_det=50, verbose=False)
    x = torch.cat([_letterboxed((256, 416)), _letterboxed((256, 416), flip=True)])
    with torch.inference_mode():
        pred, protos = yolo.model.eval()(x)
    refs = _reference(pred, protos, 0.05, max_det=50)
    assert all(len(d) for d, _ in refs)
    outs = _run(path, x)
    _assert_matches(outs, refs, 50)

    # YOLO(file).predict skips our NMS; boxes equal, masks decoded from the probability maps stay close
    from yoloseg.data.letterbox import LetterBox

    m = YOLO(path)
    assert m.overrides["conf"] == 0.05 and m.overrides["imgsz"] == 320
    img = cv2.imread(str(COFFEE))
    lb_shape = LetterBox(320, auto=True, stride=32)(img)[0].shape[:2]  # dynamic file: the minimal letterbox
    for retina in (False, True):
        want = yolo.predict(str(COFFEE), conf=0.05, verbose=False, retina_masks=retina)[0]
        got = m.predict(str(COFFEE), verbose=False, retina_masks=retina)[0]
        assert len(got.boxes.data) == len(want.boxes.data) > 0
        assert_close_result_boxes(got.boxes.data, want.boxes.data, lb_shape, img.shape[:2])
        a, b = got.masks.data, want.masks.data
        ious = (a & b).flatten(1).sum(1).float() / (a | b).flatten(1).sum(1).float()
        assert float(ious.min()) >= 0.95 and float(ious.mean()) >= 0.97, ious
    # a higher conf than the built-in one filters exactly
    hi = m.predict(str(COFFEE), conf=0.08, verbose=False)[0]
    ref_hi = yolo.predict(str(COFFEE), conf=0.08, verbose=False)[0]
    assert_close_result_boxes(hi.boxes.data, ref_hi.boxes.data, lb_shape, img.shape[:2])


class _Fixed(torch.nn.Module):
    """A stand-in network whose eval forward returns a fixed (pred, protos) for 64x64 inputs."""

    def __init__(self, pred, protos):
        super().__init__()
        self.register_buffer("pred", pred)
        self.register_buffer("protos", protos)

    def forward(self, x):
        zero = x.mean() * 0  # keeps the input connected to the outputs
        return self.pred + zero, self.protos + zero


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_threshold_edges_match_our_nms(tmp_path):
    """score == conf is dropped, IoU == iou keeps both boxes, IoU > iou suppresses; per-class NMS only."""
    from yoloseg.engine.end2end import End2End

    nc, nm, a = 2, 4, 8
    boxes_xyxy = torch.tensor([
        [0, 0, 20, 20], [0, 0, 20, 20],  # identical, different classes: both kept
        [30, 0, 50, 20], [30, 0, 50, 10],  # IoU 0.5 exactly (threshold 0.5): kept
        [0, 30, 20, 50], [0, 31, 20, 50],  # IoU 0.95: suppressed
        [40, 40, 60, 60], [40, 40, 60, 60],  # score == conf: dropped / just above: kept
    ], dtype=torch.float32)
    xywh = torch.cat([(boxes_xyxy[:, :2] + boxes_xyxy[:, 2:]) / 2, boxes_xyxy[:, 2:] - boxes_xyxy[:, :2]], 1)
    scores = torch.zeros(a, nc)
    best = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.75, 0.74, 0.25, 0.2501])
    cls = torch.tensor([0, 1, 0, 0, 1, 1, 0, 1])
    scores[torch.arange(a), cls] = best
    scores[torch.arange(a), 1 - cls] = best * 0.5  # second-best class must not take part
    coeffs = torch.randn(a, nm, generator=torch.Generator().manual_seed(0))
    pred = torch.cat([xywh, scores, coeffs], 1).T[None].contiguous()
    protos = torch.randn(1, nm, 16, 16, generator=torch.Generator().manual_seed(1))
    net = End2End(_Fixed(pred, protos), conf=0.25, iou=0.5, max_det=10).eval()
    x = torch.zeros(1, 3, 64, 64)
    path = str(tmp_path / "edges.onnx")
    torch.onnx.export(net, (x,), path, dynamo=False, opset_version=17, input_names=["images"],
                      output_names=["num_dets", "boxes", "scores", "classes", "masks"])
    refs = _reference(pred, protos, 0.25, iou=0.5, max_det=10)
    assert len(refs[0][0]) == 6  # the oracle: 8 minus the suppressed box minus the score-equal-to-conf one
    _assert_matches(_run(path, x), refs, 10)
    with torch.inference_mode():  # the eager wrapper (our NMS) agrees too
        _assert_matches(net(x), refs, 10)


def test_end2end_settings_are_checked():
    from yoloseg.engine.end2end import End2End

    for kw, msg in (({"conf": 1.0}, "conf"), ({"iou": 1.5}, "iou"), ({"max_det": 0}, "max_det")):
        with pytest.raises(ValueError, match=msg):
            End2End(torch.nn.Identity(), **kw)


def test_nms_true_is_the_ultralytics_name_for_end2end(yolo, wdir):
    import onnx

    path = yolo.export(format="onnx", nms=True, imgsz=320, verbose=False)
    assert str(path).endswith("_end2end.onnx")
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["end2end"] == "true"
    assert any(n.op_type == "NonMaxSuppression" for n in onnx.load(str(path)).graph.node)
