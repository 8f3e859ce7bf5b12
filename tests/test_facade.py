"""The YOLO facade: model sources, remembered arguments, settings merge and dispatch to the task's engine."""

from pathlib import Path

import pytest
import torch

from yoloseg import YOLO
from yoloseg.cfg import CfgError
from yoloseg.tasks import Task

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
SYNTH3 = FIXTURES / "ultralytics" / "yolo11n-seg-synth3-e100.pt"


class _Tiny(torch.nn.Module):
    names = {0: "a", 1: "b"}
    task = "echo"

    def forward(self, x):
        return x


class _Recorder:
    calls: list = []


class FakePredictor(_Recorder):
    def __init__(self, cfg, model, task):
        self.init = (cfg, model, task)

    def __call__(self, source, stream=False):
        _Recorder.calls.append(("predict", self.init, source, stream, self))
        return iter(["r"]) if stream else ["r"]


class FakeValidator(_Recorder):
    def __init__(self, cfg, model=None, task=None, dataloader=None):
        self.init = (cfg, model, task)

    def __call__(self):
        _Recorder.calls.append(("val", self.init))
        return "metrics"


class FakeTrainer(_Recorder):
    def __init__(self, cfg, task):
        self.init = (cfg, task)

    def train(self):
        _Recorder.calls.append(("train", self.init))
        return "train-metrics"


class FakeExporter(_Recorder):
    def __init__(self, cfg, model):
        self.init = (cfg, model)

    def __call__(self):
        _Recorder.calls.append(("export", self.init))
        return "out.onnx"


ECHO = Task(name="echo", build_model=lambda cfg, nc=None: _Tiny(), predictor=FakePredictor,
            validator=FakeValidator, trainer=FakeTrainer, exporter=FakeExporter)


@pytest.fixture
def echo(monkeypatch):
    import yoloseg.tasks.registry as reg

    monkeypatch.setattr(reg, "_DEFAULT", None)
    reg.register_task(ECHO)
    _Recorder.calls = []
    return YOLO(_Tiny(), task="echo")


def test_yaml_model_and_info():
    m = YOLO("yolo11n-seg.yaml")
    assert m.task == "segment" and len(m.names) == 80 and not m.is_exported
    layers, params, grads, gflops = m.info(verbose=False)
    assert params == 2_876_848  # Ultralytics 8.4.190's count for yolo11n-seg, nc=80
    assert m.fuse() is m and m.model.is_fused()


@pytest.mark.parametrize(
    "model, exc, fragment",
    [
        ("nope-seg.yaml", FileNotFoundError, "nope-seg.yaml"),
        ("missing/weights.pt", FileNotFoundError, "missing/weights.pt"),
        ("missing.onnx", FileNotFoundError, "missing.onnx"),
        ("weights.bin", ValueError, "weights.bin"),
        ("", ValueError, "must not be empty"),
        (3, ValueError, "int"),
    ],
)
def test_bad_model_arguments(model, exc, fragment):
    with pytest.raises(exc, match=fragment):
        YOLO(model)


def test_checkpoint_remembers_its_training_arguments():
    m = YOLO(SYNTH3)
    assert m.task == "segment" and m.names == {0: "ellipse", 1: "triangle", 2: "rectangle"}
    assert m.ckpt_path == str(SYNTH3)
    # the fixture's train_args: imgsz 320 and its data YAML (see the fixture meta.json)
    assert m.overrides["imgsz"] == 320 and m.overrides["data"].endswith("synth-seg/data.yaml")


def test_checkpoint_predicts_fixture_detections():
    import numpy as np

    ref = np.load(FIXTURES / "ultralytics" / "yolo11n-seg-synth3-e100-predict.npz")
    # the fixture's second run: imgsz=640, conf=0.05 (4 detections); the checkpoint itself remembers imgsz=320
    r = YOLO(SYNTH3).predict(FIXTURES / "images" / "coffee.png", imgsz=640, conf=0.05, verbose=False)
    assert len(r) == 1
    assert sorted(r[0].boxes.cls.tolist()) == sorted(ref["conf2_boxes_cls"].tolist())
    assert np.allclose(sorted(r[0].boxes.conf.tolist()), sorted(ref["conf2_boxes_conf"].tolist()), atol=1e-4)


def test_predict_merges_and_dispatches(echo):
    out = echo.predict("img.jpg", conf=0.5)
    assert out == ["r"]
    _, (cfg, model, task), source, stream, pred = _Recorder.calls[-1]
    assert (cfg.mode, cfg.conf, cfg.batch, cfg.source, cfg.save) == ("predict", 0.5, 1, "img.jpg", False)
    assert model is echo.model and task is ECHO and source == "img.jpg" and stream is False
    assert list(echo("img.jpg", stream=True, conf=0.5)) == ["r"]
    assert _Recorder.calls[-1][4] is pred  # same settings: the prepared predictor is reused
    echo.predict("img.jpg", conf=0.6)
    assert _Recorder.calls[-1][4] is not pred


def test_predict_needs_a_source(echo):
    with pytest.raises(ValueError, match="predict needs a source"):
        echo.predict()


def test_val_train_export_dispatch(echo):
    assert echo.val(data="my.yaml") == "metrics"
    cfg, model, task = _Recorder.calls[-1][1]
    assert (cfg.mode, cfg.data, cfg.conf) == ("val", "my.yaml", 0.001) and model is echo.model

    assert echo.train(epochs=3) == "train-metrics"
    cfg, task = _Recorder.calls[-1][1]
    assert (cfg.mode, cfg.epochs, cfg.data) == ("train", 3, "synthetic-shapes") and task is ECHO

    assert echo.export(format="torchscript", dynamic=True) == "out.onnx"
    cfg, model = _Recorder.calls[-1][1]
    assert (cfg.mode, cfg.format, cfg.dynamic, cfg.batch) == ("export", "torchscript", True, 1)


def test_invalid_settings_fail_before_the_engine(echo):
    with pytest.raises(CfgError, match="did you mean 'epochs'"):
        echo.train(epoch=3)
    with pytest.raises(CfgError, match="0 <= conf <= 1"):
        echo.predict("x.jpg", conf=3)
    assert _Recorder.calls == []


def test_remembered_data_is_used_by_val(echo):
    echo.overrides = {"data": "remembered.yaml", "imgsz": 320}
    echo.val()
    cfg = _Recorder.calls[-1][1][0]
    assert (cfg.data, cfg.imgsz) == ("remembered.yaml", 320)
    echo.val(data="other.yaml")
    assert _Recorder.calls[-1][1][0].data == "other.yaml"


def test_exported_file_is_kept_as_a_path(tmp_path):
    f = tmp_path / "m.onnx"
    f.write_bytes(b"not really onnx")
    m = YOLO(f)
    assert m.is_exported and m.exported_path == str(f) and m.model is None and m.task == "segment"
    for call in (m.info, m.fuse, m.train, m.export):
        with pytest.raises(ValueError, match="exported file"):
            call()


def test_missing_official_checkpoint_says_weights_are_not_downloaded(tmp_path, monkeypatch):
    from yoloseg import YOLO

    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not download weights.*yolo11s-seg.yaml"):
        YOLO("yolo11s-seg.pt")
    with pytest.raises(FileNotFoundError, match=r"model file 'other.pt' not found$"):
        YOLO("other.pt")
