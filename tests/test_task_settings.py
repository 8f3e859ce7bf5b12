"""A task's own settings (Task.settings): declared, checked, listed, saved with the run, given to the loss."""

import csv
import importlib.util
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from yoloseg.cfg import CfgError, check_key, get_cfg, task_setting
from yoloseg.cli import cli
from yoloseg.tasks import Task

HAS_EXAMPLE_PLUGIN = importlib.util.find_spec("yoloseg_example") is not None
needs_plugin = pytest.mark.skipif(not HAS_EXAMPLE_PLUGIN, reason="plugins/yoloseg-example is not installed")


def test_declared_settings_are_checked_like_builtin_ones():
    extra = Task(name="toy", settings=[
        dict(key="toy_gain", default=1.0, type="float", range="[0, 10]", help="a gain"),
        dict(key="toy_mode", default="fast", type="str", choices=("fast", "exact"), help="a choice"),
    ]).settings
    cfg = get_cfg({"toy_gain": "2.5", "toy_mode": "EXACT", "epochs": "3"}, extra=extra)
    assert cfg.toy_gain == 2.5 and cfg.toy_mode == "exact" and cfg.epochs == 3
    assert get_cfg({}, extra=extra).toy_gain == 1.0  # the declared default
    with pytest.raises(CfgError, match="toy_gain=11.0 is out of range"):
        get_cfg({"toy_gain": 11.0}, extra=extra)
    with pytest.raises(CfgError, match="did you mean 'toy_gain'"):
        get_cfg({"toy_gian": 1}, extra=extra)
    with pytest.raises(CfgError, match="unknown setting 'toy_gain'"):
        get_cfg({"toy_gain": 1})  # without the task it is not a setting
    assert check_key("toy-gain", extra=extra) == "toy_gain"


@pytest.mark.parametrize(
    "spec, match",
    [
        (dict(key="epochs", default=1, type="int", help="h"), "already a yoloseg setting"),
        (dict(key="Gain", default=1, type="int", help="h"), "lowercase identifier"),
        (dict(key="g", default=1, type="complex", help="h"), "unknown type"),
        (dict(key="g", default=20.0, type="float", range="[0, 10]", help="h"), "default of setting 'g' is not valid"),
    ],
)
def test_bad_declarations_fail_when_the_task_is_made(spec, match):
    with pytest.raises(ValueError, match=match):
        Task(name="toy", settings=[spec])
    with pytest.raises(ValueError, match="declared twice"):
        Task(name="toy", settings=[dict(key="g", default=1, type="int", help="h")] * 2)
    assert task_setting("g", 1, "int", "h", task="toy").section == "task:toy"


@needs_plugin
class TestExamplePluginSetting:
    def _run(self, *args):
        return CliRunner().invoke(cli, list(args))

    def test_help_lists_it_and_bad_values_are_one_line_errors(self):
        r = self._run("tinyseg", "train", "--help")
        assert r.exit_code == 0 and "Settings of the tinyseg task" in r.output and "mask_gain=1.0" in r.output
        r = self._run("tinyseg", "info", "mask_gain=abc")
        assert r.exit_code == 2 and "mask_gain='abc' is not valid" in r.output and "Traceback" not in r.output
        r = self._run("tinyseg", "info", "mask_gian=2")
        assert r.exit_code == 2 and "did you mean 'mask_gain'" in r.output
        r = self._run("train", "mask_gain=2", "epochs=1")  # the segment task does not declare it
        assert r.exit_code == 2 and "unknown setting 'mask_gain'" in r.output

    def test_it_reaches_the_loss_and_is_saved_with_the_run(self, tmp_path):
        from yoloseg import YOLO
        from yoloseg.checkpoints import load_checkpoint
        from yoloseg.data.synthetic import generate_synthetic_shapes

        root = tmp_path / "shapes"
        generate_synthetic_shapes(root, n_train=8, n_val=4, imgsz=64, seed=3)
        model = YOLO("tinyseg.yaml")
        kw = dict(data=str(root / "data.yaml"), epochs=1, imgsz=64, batch=4, workers=0, device="cpu",
                  project=str(tmp_path / "runs"), verbose=False, plots=False)
        model.train(mask_gain=0.0, name="zero", **kw)
        with open(tmp_path / "runs" / "zero" / "results.csv", newline="") as f:
            row = next(csv.DictReader(f))
        assert float(row["train/seg_loss"]) == 0.0 and float(row["train/box_loss"]) > 0  # the mask term is off
        _, meta = load_checkpoint(tmp_path / "runs" / "zero" / "weights" / "last.pt")
        assert meta["train_args"]["mask_gain"] == 0.0
        YOLO("tinyseg.yaml").train(name="default", **kw)
        with open(tmp_path / "runs" / "default" / "results.csv", newline="") as f:
            assert float(next(csv.DictReader(f))["train/seg_loss"]) > 0
        with pytest.raises(CfgError, match="mask_gain=-1"):
            YOLO("tinyseg.yaml").train(mask_gain=-1, **kw)


def test_loss_gets_the_task_settings_in_hyp():
    from yoloseg.engine import train_setup

    seen = {}
    task = Task(name="toy", settings=[dict(key="toy_gain", default=1.0, type="float", help="h")],
                loss=lambda model, hyp: seen.update(hyp) or "loss")
    tr = SimpleNamespace(task=task, model=None, args=SimpleNamespace(box=7.5, cls=0.5, dfl=1.5, overlap_mask=True,
                                                                     toy_gain=3.0))
    assert train_setup.build_loss(tr) == "loss" and seen["toy_gain"] == 3.0 and seen["box"] == 7.5
