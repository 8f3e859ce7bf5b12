"""The C++ predict pipeline (csrc/pipeline.h) against the Python one.

- letterbox: the compiled letterbox equals yoloseg.data.LetterBox (cv2) byte for byte, and the float input equals
  what the predictor feeds the model;
- postprocess: the compiled call the predictor now makes equals NMS + box scaling + mask decoding run as separate
  steps (the previous Python composition), on random predictions with every option;
- examples/cpp: `predict` built against the installed torch (libtorch from the wheel) on the fixture model's
  TorchScript export and the shared photo gives the detections of `yoloseg predict` on the same file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from yoloseg import _C as C
from yoloseg.data.letterbox import LetterBox

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "fixtures"
COFFEE = SHARED / "images" / "coffee.png"
SYNTH3 = SHARED / "ultralytics" / "yolo11n-seg-synth3-e100.pt"
CMAKE = shutil.which("cmake")
CXX = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")


# ----- letterbox -------------------------------------------------------------------------------------------------
LETTERBOX_SIZES = [(400, 600), (427, 640), (960, 1280), (720, 1280), (1080, 1920), (100, 37), (33, 41), (640, 640),
                   (1, 1), (2, 3), (500, 333), (799, 601), (13, 1000), (1000, 13), (321, 479)]


@pytest.mark.parametrize("h,w", LETTERBOX_SIZES)
def test_letterbox_equals_cv2(h, w):
    img = np.random.default_rng(h * 7919 + w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    for auto in (True, False):
        for target, scaleup in ((640, True), ((480, 640), True), (320, True), (320, False)):
            lb = LetterBox(target, auto=auto, stride=32, scaleup=scaleup)
            ref, (ratio, (left, top)) = lb(img)
            th, tw = lb.new_shape
            out, geo = C.letterbox_u8(img, th, tw, auto, 32, scaleup, 114, 2)
            np.testing.assert_array_equal(out, ref, err_msg=f"{(h, w)} -> {target} auto={auto} scaleup={scaleup}")
            assert geo[4:] == (top, left, ratio)


def test_letterbox_float_input_equals_predictor():
    import cv2
    from types import SimpleNamespace

    from yoloseg.engine.predictor import Predictor

    img = cv2.imread(str(COFFEE))
    p = Predictor(SimpleNamespace(imgsz=640), model=SimpleNamespace(stride=32))
    p.device, p.half = torch.device("cpu"), False
    x_ref = p.preprocess([SimpleNamespace(tensor=None, image=img)])
    x, geo = C.letterbox(img, 640, 640, True, 32, True, 114, 1)
    assert torch.equal(torch.from_numpy(x)[None], x_ref)
    assert geo == (448, 640, 427, 640, 10, 0, 640 / 600)


def test_letterbox_refuses_bad_input():
    with pytest.raises(ValueError, match="shape"):
        C.letterbox(np.zeros((4, 4), np.uint8), 64, 64)
    with pytest.raises(ValueError, match="target size"):
        C.letterbox(np.zeros((4, 4, 3), np.uint8), 0, 64)
    with pytest.raises(ValueError, match="pad_value"):
        C.letterbox(np.zeros((4, 4, 3), np.uint8), 64, 64, pad_value=300)


# ----- postprocess -----------------------------------------------------------------------------------------------
def _random_outputs(seed, nc=5, nm=8, h=96, w=128, orig=(150, 190)):
    """A prediction whose boxes overlap in clusters, class scores spread around the thresholds, and protos."""
    g = torch.Generator().manual_seed(seed)
    a = (h // 8) * (w // 8) + (h // 16) * (w // 16) + (h // 32) * (w // 32)
    centres = torch.rand(12, 2, generator=g) * torch.tensor([w, h])
    pick = torch.randint(0, 12, (a,), generator=g)
    xy = centres[pick] + torch.randn(a, 2, generator=g) * 4
    wh = 8 + torch.rand(a, 2, generator=g) * 40
    scores = torch.rand(nc, a, generator=g) ** 3
    coeffs = torch.randn(nm, a, generator=g)
    pred = torch.cat([xy.T, wh.T, scores, coeffs])[None]
    protos = torch.randn(1, nm, h // 4, w // 4, generator=g)
    return pred, protos, (h, w), orig


def _composed(pred, protos, input_shape, orig, conf, iou, classes, agnostic, max_det, retina):
    """The postprocess as separate steps (non_max_suppression, scale_boxes, decode_mask_crops, empty-mask filter)."""
    from yoloseg import ops
    from yoloseg.ops.mask_crops import decode_mask_crops

    (det,) = ops.non_max_suppression(pred, conf, iou, classes=classes, agnostic=agnostic, max_det=max_det,
                                     nm=protos.shape[1])
    boxes = ops.scale_boxes(input_shape, det[:, :4].clone(), orig)
    if retina:
        masks = decode_mask_crops(protos[0], det[:, 6:], boxes, orig, native=True)
    else:
        masks = decode_mask_crops(protos[0], det[:, 6:], det[:, :4], input_shape)
    keep = masks.windows[:, 2] > masks.windows[:, 0]
    return torch.cat([boxes, det[:, 4:6]], 1)[torch.from_numpy(keep)], masks.select(keep)


@pytest.mark.parametrize("seed", range(6))
def test_compiled_postprocess_equals_composed_steps(seed):
    from yoloseg.engine.predictor import segment_postprocess

    pred, protos, shape, orig = _random_outputs(seed)
    settings = [
        dict(conf=0.25, iou=0.7, classes=None, agnostic=False, max_det=300, retina=False),
        dict(conf=0.05, iou=0.5, classes=None, agnostic=False, max_det=300, retina=True),
        dict(conf=0.1, iou=0.45, classes=[1, 3, 99], agnostic=False, max_det=300, retina=True),
        dict(conf=0.001, iou=0.7, classes=None, agnostic=True, max_det=20, retina=False),
        dict(conf=0.9999, iou=0.7, classes=None, agnostic=False, max_det=300, retina=True),
    ]
    for s in settings:
        (out,) = segment_postprocess((pred, protos), shape, [orig], conf=s["conf"], iou=s["iou"],
                                     classes=s["classes"], agnostic=s["agnostic"], max_det=s["max_det"],
                                     retina_masks=s["retina"], crops=True)
        boxes, masks = _composed(pred, protos, shape, orig, s["conf"], s["iou"], s["classes"], s["agnostic"],
                                 s["max_det"], s["retina"])
        assert torch.equal(out["boxes"], boxes), s
        if not len(boxes):
            assert out["masks"] is None
            continue
        assert torch.equal(out["masks"].dense(), masks.dense()), s
        np.testing.assert_array_equal(out["mask_boxes"].numpy(), masks.windows.astype(np.float32))


def test_compiled_postprocess_checks_its_input():
    from yoloseg.ops.pipeline import segment_postprocess_image

    pred, protos, shape, orig = _random_outputs(0)
    with pytest.raises(ValueError, match="conf_thres"):
        segment_postprocess_image(pred[0], protos[0], shape, orig, conf=1.5)
    with pytest.raises(ValueError, match="pred"):
        segment_postprocess_image(pred[0, :10], protos[0], shape, orig)
    bad = pred.clone()
    bad[0, 0, :] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite box"):
        segment_postprocess_image(bad[0], protos[0], shape, orig, conf=0.0)


# ----- the C++ example program -----------------------------------------------------------------------------------
needs_build = pytest.mark.skipif(not (CMAKE and CXX), reason="needs cmake and a C++ compiler")


@pytest.fixture(scope="module")
def predict_exe(tmp_path_factory):
    build = tmp_path_factory.mktemp("predict-build")
    torch_dir = Path(torch.utils.cmake_prefix_path) / "Torch"
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    cfg = subprocess.run([CMAKE, "-S", str(ROOT / "examples" / "cpp"), "-B", str(build), *gen,
                          "-DCMAKE_BUILD_TYPE=Release", f"-DTorch_DIR={torch_dir}"],
                         capture_output=True, text=True, timeout=300)
    if cfg.returncode != 0 and "Could NOT find PNG" in cfg.stdout + cfg.stderr:
        pytest.skip("needs libpng (Debian: libpng-dev)")
    assert cfg.returncode == 0, cfg.stdout + cfg.stderr
    bld = subprocess.run([CMAKE, "--build", str(build), "--parallel", "2"], capture_output=True, text=True,
                         timeout=1200)
    assert bld.returncode == 0, bld.stdout[-4000:] + bld.stderr[-4000:]
    return build / "predict"


def _export(folder: Path, dynamic: bool) -> Path:
    from yoloseg import YOLO

    pt = folder / SYNTH3.name
    shutil.copyfile(SYNTH3, pt)
    return Path(YOLO(str(pt)).export(format="torchscript", imgsz=640, dynamic=dynamic, verbose=False))


@pytest.fixture(scope="module")
def torchscript_model(tmp_path_factory):
    """Dynamic export: letterboxed to the next stride multiple (448x640 for the photo), as predict does."""
    return _export(tmp_path_factory.mktemp("ts-dynamic"), True)


@pytest.fixture(scope="module")
def torchscript_static(tmp_path_factory):
    """Static export: exactly 640x640."""
    return _export(tmp_path_factory.mktemp("ts-static"), False)


def _run(exe, *args, timeout=300):
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def _python_predict(model_path, conf):
    from yoloseg import YOLO

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the reduction order of the convolutions depends on the thread count
    try:
        (r,) = YOLO(str(model_path)).predict(str(COFFEE), conf=conf, iou=0.7, retina_masks=True, verbose=False)
    finally:
        torch.set_num_threads(threads)
    return r


@pytest.mark.slow
@needs_build
@pytest.mark.parametrize("conf,export", [(0.001, "dynamic"), (0.05, "dynamic"), (0.05, "static")])
def test_cpp_predict_equals_yoloseg_predict(predict_exe, request, tmp_path, conf, export):
    from yoloseg.metrics import rle

    model = request.getfixturevalue("torchscript_model" if export == "dynamic" else "torchscript_static")
    overlay = tmp_path / "overlay.png"
    run = _run(predict_exe, model, COFFEE, "--conf", conf, "--iou", 0.7, "--threads", 1, "--rle", "--out", overlay)
    assert run.returncode == 0, run.stderr
    dets = json.loads(run.stdout)
    r = _python_predict(model, conf)
    assert len(dets) == len(r) and len(dets) >= (300 if conf == 0.001 else 3)
    boxes = np.array([d["box"] for d in dets])
    ref = r.boxes.data.numpy()
    assert np.abs(boxes - ref[:, :4]).max() <= 1e-3
    assert np.abs(np.array([d["score"] for d in dets]) - ref[:, 4]).max() <= 1e-5
    np.testing.assert_array_equal([d["class"] for d in dets], ref[:, 5].astype(int))
    h, w = r.orig_shape
    masks = rle.decode([{"size": [h, w], "counts": d["rle"]} for d in dets]).astype(bool)
    ref_masks = r.masks.data.numpy().astype(bool)
    assert ref_masks.shape == masks.shape == (len(dets), h, w)
    inter = (masks & ref_masks).sum((1, 2))
    union = (masks | ref_masks).sum((1, 2))
    assert (inter / union).min() >= 0.999
    np.testing.assert_array_equal([d["mask_area"] for d in dets], masks.sum((1, 2)))

    import cv2

    img, photo = cv2.imread(str(overlay)), cv2.imread(str(COFFEE))
    assert img.shape == photo.shape
    assert (img != photo).any(2).sum() >= int(ref_masks.any(0).sum() * 0.9)  # masks painted over the photo


@pytest.mark.slow
@needs_build
def test_cpp_predict_reports_errors(predict_exe, torchscript_model, tmp_path):
    run = _run(predict_exe, tmp_path / "missing.torchscript", COFFEE)
    assert run.returncode == 1 and "missing.torchscript" in run.stderr
    not_image = tmp_path / "notes.png"
    not_image.write_text("not an image")
    run = _run(predict_exe, torchscript_model, not_image, "--out", "")
    assert run.returncode == 1 and "notes.png" in run.stderr and "PNG or JPEG" in run.stderr
    run = _run(predict_exe, torchscript_model, COFFEE, "--conf", "2")
    assert run.returncode == 2 and "--conf" in run.stderr
    run = _run(predict_exe, torchscript_model, COFFEE, "--conf", "0.25", "--out", "")
    assert run.returncode == 0 and json.loads(run.stdout) == []  # the synth3 model's best score is 0.13
