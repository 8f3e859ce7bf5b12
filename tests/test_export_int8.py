"""Int8 ONNX export (onnxruntime QDQ) and OpenVINO export (fp32, fp16, int8 through NNCF), predict and val.

Model: the trained synth3 fixture checkpoint; data: a tiny synthetic-shapes set from the built-in generator
(8 train images for calibration, 4 val images), 96 px, so each export takes seconds. Oracle: the PyTorch
model's eval forward on the same letterboxed images. Float exports must match it to float rounding
(fp16 to half precision); int8 exports must stay close (scores within 0.05, not collapsed to zero: the known
failure of quantizing the head's decode), and ``val`` through every export must give metrics close to the
PyTorch model's on the same images. OpenVINO tests skip when the ``openvino`` extra is not installed.
"""

from __future__ import annotations

import builtins
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED = Path(os.environ.get("YOLOSEG_SHARED", Path(__file__).resolve().parents[2] / "shared"))
WEIGHTS = SHARED / "fixtures" / "ultralytics" / "yolo11n-seg-synth3-e100.pt"
IMGSZ = 96

pytestmark = pytest.mark.skipif(not WEIGHTS.exists(), reason="no shared fixtures")
ort = pytest.importorskip("onnxruntime")


def _has(mod):
    try:
        __import__(mod)
        return True
    except ImportError:
        return False


needs_openvino = pytest.mark.skipif(not (_has("openvino") and _has("nncf")),
                                    reason="openvino/nncf not installed (pip install 'yoloseg[openvino]')")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from yoloseg.data.synthetic import ensure_synthetic_shapes

    root = tmp_path_factory.mktemp("data")
    return str(ensure_synthetic_shapes(root, seed=3, n_train=8, n_val=4, imgsz=IMGSZ))


@pytest.fixture(scope="module")
def wdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("int8")
    shutil.copy(WEIGHTS, d / "m.pt")
    return d


@pytest.fixture(scope="module")
def yolo(wdir):
    from yoloseg import YOLO

    return YOLO(str(wdir / "m.pt"))


@pytest.fixture(scope="module")
def exported(wdir):
    cache = {}

    def get(name, **kw):
        if name not in cache:
            from yoloseg import YOLO

            sub = wdir / name
            sub.mkdir()
            shutil.copy(wdir / "m.pt", sub / "m.pt")
            cache[name] = YOLO(str(sub / "m.pt")).export(imgsz=IMGSZ, verbose=False, **kw)
        return cache[name]

    return get


def _val_images(data):
    import cv2

    from yoloseg.data.letterbox import LetterBox

    folder = Path(data).parent / "images" / "val"
    ims = [LetterBox(IMGSZ, auto=False)(cv2.imread(str(p)))[0] for p in sorted(folder.glob("*.jpg"))]
    return torch.from_numpy(np.stack(ims)).permute(0, 3, 1, 2).flip(1).float().contiguous() / 255


def _compare(backend, yolo, x, score_tol, box_tol, coef_tol, proto_tol, score_median_tol=1e-3):
    with torch.inference_mode():
        want_pred, want_protos = yolo.model.eval()(x)
    pred, protos = backend(x)
    assert pred.shape == want_pred.shape and protos.shape == want_protos.shape
    nc = 3
    d_box = (pred[:, :4] - want_pred[:, :4]).abs()
    d_score = (pred[:, 4:4 + nc] - want_pred[:, 4:4 + nc]).abs()
    d_coef = (pred[:, 4 + nc:] - want_pred[:, 4 + nc:]).abs()
    d_proto = (protos - want_protos).abs()
    assert d_score.max() <= score_tol, f"scores differ by up to {d_score.max():.4g}"
    assert d_score.median() <= score_median_tol, f"scores differ by {d_score.median():.4g} (median)"
    assert d_box.median() <= box_tol, f"boxes differ by {d_box.median():.4g} px (median)"
    assert d_coef.median() <= coef_tol and d_proto.median() <= proto_tol
    top = want_pred[:, 4:4 + nc].amax(1) > 0.5 * float(want_pred[:, 4:4 + nc].max())
    assert float(pred[:, 4:4 + nc].amax(1)[top].min()) > 0  # the best anchors still score: no collapse to 0
    return d_score.max()


def _val(path_or_model, data):
    kw = dict(data=data, imgsz=IMGSZ, batch=2, conf=0.001, plots=False, verbose=False, workers=0)
    from yoloseg import YOLO

    m = path_or_model if not isinstance(path_or_model, str) else YOLO(path_or_model)
    return m.val(**kw)


# ------------------------------------------------------------------------------------------- calibration set
def test_calibration_files_fraction_count_and_train_split_only(data):
    from yoloseg.engine.quantize import calibration_files

    train = sorted((Path(data).parent / "images" / "train").glob("*.jpg"))
    assert calibration_files(data) == [str(p) for p in train]  # fewer than the default 300: all of them
    three = calibration_files(data, count=3)
    assert len(three) == 3 and three[0] == str(train[0]) and three[-1] == str(train[-1])  # spread evenly
    assert len(calibration_files(data, fraction=0.5)) == 4
    assert len(calibration_files(data, fraction=0.5, count=2)) == 2
    assert all("/images/train/" in f for f in calibration_files(data))
    with pytest.raises(ValueError, match="fraction must be in"):
        calibration_files(data, fraction=1.5)


# ------------------------------------------------------------------------------------------- int8 ONNX
def test_int8_onnx_written_beside_the_float_file(exported, data, wdir):
    import onnx

    path = exported("int8", format="onnx", int8=True, data=data, calib_images=6)
    assert Path(path).name == "m_int8.onnx" and (Path(path).parent / "m.onnx").is_file()
    model = onnx.load(path)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 50 and ops.count("DequantizeLinear") > 100
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["int8"] == "true" and meta["calib_images"] == "6" and meta["names"].startswith("{")
    # the head decode stays float: no tensor it reads comes out of a DequantizeLinear
    from yoloseg.engine.quantize import head_float_nodes

    float_names = set(head_float_nodes(onnx.load(str(Path(path).parent / "m.onnx"))))
    produced_by = {o: n for n in model.graph.node for o in n.output}
    for n in model.graph.node:
        if n.name in float_names and n.op_type in ("Softmax", "Sigmoid"):
            assert all(produced_by.get(i) is None or produced_by[i].op_type != "DequantizeLinear" for i in n.input)


def test_int8_onnx_outputs_close_to_pytorch(exported, data, yolo):
    from yoloseg.engine.backends import load_exported

    path = exported("int8", format="onnx", int8=True, data=data, calib_images=6)
    _compare(load_exported(path), yolo, _val_images(data), score_tol=0.08, box_tol=1.5, coef_tol=0.3, proto_tol=0.1)


def test_int8_onnx_predict_and_val(exported, data, yolo):
    from yoloseg import YOLO

    path = exported("int8", format="onnx", int8=True, data=data, calib_images=6)
    img = sorted((Path(data).parent / "images" / "val").glob("*.jpg"))[0]
    res = YOLO(path).predict(str(img), conf=0.01)
    want = yolo.predict(str(img), imgsz=IMGSZ, conf=0.01)
    assert len(res) == 1 and res[0].masks is not None and len(res[0].boxes) > 0
    assert abs(len(res[0].boxes) - len(want[0].boxes)) <= max(2, len(want[0].boxes) // 2)
    got, ref = _val(path, data), _val(yolo, data)
    assert 0 <= got.seg.map <= 1 and 0 <= got.box.map <= 1
    assert got.box.map50 == pytest.approx(ref.box.map50, abs=0.15)


def test_int8_refusals(yolo, data, wdir):
    with pytest.raises(ValueError, match="needs calibration images: give data="):
        yolo.export(format="onnx", int8=True, imgsz=IMGSZ, data=None)  # the fixture remembers a data set
    with pytest.raises(ValueError, match="not torchscript"):
        yolo.export(format="torchscript", int8=True, data=data, imgsz=IMGSZ)
    with pytest.raises(ValueError, match="cannot be combined with end2end"):
        yolo.export(format="onnx", int8=True, end2end=True, data=data, imgsz=IMGSZ)
    with pytest.raises(ValueError, match="choose one"):
        yolo.export(format="onnx", int8=True, half=True, data=data, imgsz=IMGSZ)
    empty = wdir / "empty"
    (empty / "images" / "train").mkdir(parents=True)
    (empty / "images" / "val").mkdir(parents=True)
    (empty / "data.yaml").write_text(f"path: {empty}\ntrain: images/train\nval: images/val\nnames: [a]\n")
    with pytest.raises(ValueError, match="holds no images"):
        yolo.export(format="onnx", int8=True, data=str(empty / "data.yaml"), imgsz=IMGSZ)


def test_missing_openvino_names_the_extra(yolo, monkeypatch):
    real_import = builtins.__import__

    def no_ov(name, *args, **kwargs):
        if name in ("openvino", "nncf") or name.startswith("openvino."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ov)
    with pytest.raises(ModuleNotFoundError, match=r"OpenVINO export needs openvino: pip install 'yoloseg\[openvino\]'"):
        yolo.export(format="openvino", imgsz=IMGSZ)
    from yoloseg.engine.backends import OpenVINOModel

    with pytest.raises(ModuleNotFoundError, match=r"pip install 'yoloseg\[openvino\]'"):
        OpenVINOModel("whatever_openvino_model")


# ------------------------------------------------------------------------------------------- OpenVINO
@needs_openvino
@pytest.mark.parametrize("half", [False, True], ids=["fp32", "fp16"])
def test_openvino_export_matches_pytorch(exported, data, yolo, half):
    from yoloseg.engine.backends import OpenVINOModel, load_exported

    path = exported(f"ov-{half}", format="openvino", half=half)
    p = Path(path)
    assert p.name == "m_openvino_model" and p.is_dir()
    assert sorted(f.name for f in p.iterdir()) == ["m.bin", "m.xml", "metadata.yaml"]
    be = load_exported(path)
    assert isinstance(be, OpenVINOModel) and be.names == {0: "ellipse", 1: "triangle", 2: "rectangle"}
    assert be.half is half and tuple(be.imgsz) == (IMGSZ, IMGSZ)
    tol = 5e-3 if half else 2e-4
    _compare(be, yolo, _val_images(data), score_tol=tol, box_tol=0.05 if half else 1e-3, coef_tol=tol * 10,
             proto_tol=tol * 10)


@needs_openvino
def test_openvino_int8_predict_and_val(exported, data, yolo):
    from yoloseg import YOLO
    from yoloseg.engine.backends import load_exported

    path = exported("ov-int8", format="openvino", int8=True, data=data, calib_images=6)
    assert Path(path).name == "m_int8_openvino_model"
    xml = (Path(path) / "m.xml").read_text()
    assert "FakeQuantize" in xml or "FakeConvert" in xml or 'element_type="i8"' in xml or "u8" in xml
    # 6 calibration images at 96 px: the worst anchor's score moves by up to ~0.2, the typical one by < 1e-3
    _compare(load_exported(path), yolo, _val_images(data), score_tol=0.3, box_tol=1.5, coef_tol=0.3, proto_tol=0.1)
    img = sorted((Path(data).parent / "images" / "val").glob("*.jpg"))[0]
    res = YOLO(path + "/").predict(str(img), conf=0.01)
    assert len(res[0].boxes) > 0 and res[0].masks is not None
    got, ref = _val(path, data), _val(yolo, data)
    assert got.box.map50 == pytest.approx(ref.box.map50, abs=0.15)


@needs_openvino
def test_openvino_fp32_val_equals_pytorch(exported, data, yolo):
    path = exported("ov-False", format="openvino", half=False)
    got, ref = _val(path, data), _val(yolo, data)
    for attr in ("map", "map50"):
        assert getattr(got.box, attr) == pytest.approx(getattr(ref.box, attr), abs=1e-3)
        assert getattr(got.seg, attr) == pytest.approx(getattr(ref.seg, attr), abs=1e-3)
