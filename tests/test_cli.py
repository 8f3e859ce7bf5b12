"""The command line: grammar, help from the schema, one-line errors, info, plugins, dispatch to the engine."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import yoloseg.tasks.registry as registry_module
from yoloseg.cfg.schema import SCHEMA
from yoloseg.cli import cli

HAS_EXAMPLE_PLUGIN = importlib.util.find_spec("yoloseg_example") is not None
# Parameter counts (nc=80) as measured with Ultralytics 8.4.190 (the foundation issue).
YOLO11S_SEG_PARAMS = "10,113,248"
YOLO11N_SEG_PARAMS = "2,876,848"


@pytest.fixture
def run(monkeypatch):
    monkeypatch.setattr(registry_module, "_DEFAULT", None)  # every test discovers tasks afresh
    monkeypatch.delenv("YOLOSEG_DEBUG", raising=False)
    runner = CliRunner()

    def invoke(*args, env=None):
        return runner.invoke(cli, list(args), env=env, prog_name="yoloseg")

    return invoke


def _one_line_error(result, code):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def test_help_lists_modes_and_grammar(run):
    r = run("--help")
    assert r.exit_code == 0
    for word in ("train", "val", "predict", "export", "info", "plugins", "[TASK] MODE"):
        assert word in r.output
    assert run().exit_code in (0, 2)  # bare `yoloseg` shows the same help
    assert "Usage: yoloseg" in run().output


@pytest.mark.parametrize("mode", ["train", "val", "predict", "export", "info"])
def test_mode_help_lists_every_key_with_default(run, mode):
    r = run(mode, "--help")
    assert r.exit_code == 0
    for key, s in SCHEMA.items():
        if key != "mode":
            assert f"{key}=" in r.output, key
    assert "passes over the training split" in r.output  # the help text comes from the schema


def test_mode_help_shows_the_mode_defaults(run):
    out = run("predict", "--help").output
    assert "batch=1 " in out and "conf=0.25 " in out
    out = run("train", "--help").output
    assert "batch=16 " in out and "epochs=100 " in out and "data=synthetic-shapes " in out


def test_unknown_key_is_one_line_with_suggestion(run):
    line = _one_line_error(run("train", "epoch=3"), 2)
    assert line == "Error: unknown setting 'epoch'; did you mean 'epochs'?"


@pytest.mark.parametrize("words", [["predict", "conf=2"], ["segment", "predict", "conf=2"]])
def test_range_error_with_or_without_task_word(run, words):
    line = _one_line_error(run(*words), 2)
    assert "conf='2' is out of range: need 0 <= conf <= 1" in line


@pytest.mark.parametrize(
    "words, fragment",
    [
        (["trian"], "unknown command 'trian'; did you mean 'train'?"),
        (["segmnt", "train"], "did you mean 'segment'?"),
        (["epochs=3"], "missing mode before 'epochs=3'"),
        (["train", "mode=val"], "mode=val conflicts"),
        (["segment", "train", "task=other"], "task=other conflicts"),
        (["train", "epochs"], "expected key=value, got 'epochs'"),
        (["train", "imgsz=[1,2,3]"], "imgsz"),
        (["predict"], "predict needs source="),
    ],
)
def test_usage_errors(run, words, fragment):
    assert fragment in _one_line_error(run(*words), 2)


def test_info_prints_model_summary(run):
    r = run("info", "model=yolo11s-seg.yaml")
    assert r.exit_code == 0, r.output
    assert YOLO11S_SEG_PARAMS in r.output and "GFLOPs" in r.output
    r = run("segment", "info", "model=yolo11n-seg.yaml", "imgsz=320")  # the task word is an alias
    assert r.exit_code == 0 and YOLO11N_SEG_PARAMS in r.output and "320" in r.output


@pytest.mark.parametrize("model, fragment", [("nope-seg.yaml", "'nope-seg.yaml' not found"),
                                             ("missing.pt", "'missing.pt' not found"),
                                             ("model.bin", "expected a .yaml config")])
def test_info_bad_model_is_one_line(run, model, fragment):
    assert fragment in _one_line_error(run("info", f"model={model}"), 1)


def test_plugins_lists_segment_from_yoloseg(run):
    r = run("plugins")
    assert r.exit_code == 0
    rows = {ln.split()[0]: ln.split()[1:3] for ln in r.output.splitlines()[1:] if ln.strip()}
    assert rows["segment"] == ["yoloseg", "loaded"]


def test_train_without_arguments_dispatches_defaults(run, monkeypatch):
    from yoloseg.engine import trainer

    seen = {}

    def fake_train(self):
        seen["args"], seen["task"] = self.args, self.task
        return {"fitness": 0.0}

    monkeypatch.setattr(trainer.Trainer, "train", fake_train)
    r = run("train")
    assert r.exit_code == 0, r.output
    a = seen["args"]
    assert (a.mode, a.model, a.data, a.task, a.epochs, a.imgsz) == ("train", "yolo11n-seg.yaml", "synthetic-shapes",
                                                                    "segment", 100, 640)
    assert seen["task"].name == "segment"
    run("segment", "train", "epochs=3", "imgsz=320", "batch=8", "workers=0")
    a = seen["args"]
    assert (a.epochs, a.imgsz, a.batch, a.workers) == (3, 320, 8, 0)


def test_unexpected_errors_are_one_line_unless_debugging(run, monkeypatch):
    from yoloseg.engine import trainer

    def boom(self):
        raise RuntimeError("something\nbroke")

    monkeypatch.setattr(trainer.Trainer, "train", boom)
    line = _one_line_error(run("train", "epochs=1"), 1)
    assert line == "Error: RuntimeError: something broke"
    r = run("train", "epochs=1", env={"YOLOSEG_DEBUG": "1"})
    assert isinstance(r.exception, RuntimeError)


def test_console_script_help_subprocess():
    exe = Path(sys.executable).with_name("yoloseg")
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "yoloseg"]
    r = subprocess.run(cmd + ["--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "[TASK] MODE" in r.stdout
    r = subprocess.run(cmd + ["train", "epoch=3"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "did you mean 'epochs'" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.skipif(not HAS_EXAMPLE_PLUGIN, reason="plugins/yoloseg-example is not installed "
                    "(pip install -e plugins/yoloseg-example --no-deps --no-build-isolation)")
class TestExamplePlugin:
    def test_plugins_lists_it(self, run):
        r = run("plugins")
        rows = {ln.split()[0]: ln.split()[1:3] for ln in r.output.splitlines()[1:] if ln.strip()}
        assert rows["tinyseg"] == ["yoloseg-example", "loaded"] and rows["segment"] == ["yoloseg", "loaded"]

    def test_autoload_switch(self, run):
        r = run("plugins", env={"YOLOSEG_DISABLE_PLUGIN_AUTOLOAD": "1"})
        rows = {ln.split()[0]: ln.split()[1:3] for ln in r.output.splitlines()[1:] if ln.strip()}
        assert rows["tinyseg"] == ["yoloseg-example", "disabled"] and rows["segment"] == ["yoloseg", "loaded"]

    def test_task_word_selects_plugin_and_its_layers(self, run):
        r = run("tinyseg", "info")  # the task's default model, built with its own LiteConv layer type
        assert r.exit_code == 0, r.output and "tinyseg.yaml" in r.output
        from yoloseg import YOLO

        model = YOLO("tinyseg.yaml")  # the task is found from the config name it owns
        assert model.task == "tinyseg"
        assert any(type(m).__name__ == "LiteConv" for m in model.model.modules())


def test_predict_saves_annotated_outputs(run, tmp_path):
    fixtures = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
    r = run("predict", f"model={fixtures / 'ultralytics' / 'yolo11n-seg-synth3-e100.pt'}",
            f"source={fixtures / 'images' / 'coffee.png'}", "conf=0.05", "imgsz=640", f"project={tmp_path}",
            "name=out", "save_txt=true")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out" / "coffee.png").is_file()  # the command line saves unless save=false
    lines = (tmp_path / "out" / "labels" / "coffee.txt").read_text().splitlines()
    assert len(lines) == 4  # the fixture's conf=0.05 run has 4 detections


def test_ultralytics_only_setting_is_refused_before_any_work(run):
    r = run("predict", "visualize=True")  # before the missing source= is even looked at
    assert r.exit_code == 2 and "'visualize' is an Ultralytics setting that yoloseg does not have" in r.output
