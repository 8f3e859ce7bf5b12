"""Task registry: entry point discovery from a fake installed distribution, failures, the autoload switch."""

import subprocess
import sys
import textwrap
import uuid

import pytest

from yoloseg.tasks import DISABLE_ENV, PluginLoadWarning, Task, TaskRegistry, get_task
from yoloseg.tasks.base import LazyObject


@pytest.fixture
def fake_dist(tmp_path, monkeypatch):
    """A distribution 'fakeplug' on sys.path (a dist-info directory with entry_points.txt) publishing 4 tasks."""
    tag = uuid.uuid4().hex[:8]
    good, broken = f"fakeplug_good_{tag}", f"fakeplug_broken_{tag}"
    (tmp_path / f"{good}.py").write_text(textwrap.dedent(f"""
        from yoloseg.tasks import Task

        def build_fake_layer(spec, ch_in, ctx):
            raise NotImplementedError

        task = Task(name="good", model_configs=("goodnet{{scale}}.yaml",),
                    layers={{"FakeLayer{tag}": "{good}:build_fake_layer"}},
                    predictor="{good}:Predictor", description="a fake task")
        not_a_task = 42

        def make_task():
            return Task(name="factory")
    """))
    (tmp_path / f"{broken}.py").write_text("raise ImportError('this plugin needs a missing library')\n")
    dist = tmp_path / "fakeplug-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplug\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent(f"""
        [yoloseg.tasks]
        good = {good}:task
        broken = {broken}:task
        notatask = {good}:not_a_task
        factory = {good}:make_task
        misnamed = {good}:task
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(DISABLE_ENV, raising=False)
    yield {"good": good, "broken": broken, "layer": f"FakeLayer{tag}"}
    from yoloseg.nn.registry import LAYERS

    LAYERS.unregister(f"FakeLayer{tag}")
    for mod in (good, broken):
        sys.modules.pop(mod, None)


def test_discovery_is_lazy(fake_dist):
    reg = TaskRegistry()
    listing = reg.list()
    assert listing["good"] == ("fakeplug", "available")
    assert listing["segment"] == ("yoloseg", "available")
    assert {"broken", "notatask", "factory", "misnamed"} <= set(listing)
    assert fake_dist["good"] not in sys.modules  # listing names never imports a plugin


def test_load_on_demand_registers_layers(fake_dist):
    from yoloseg.nn.registry import LAYERS

    reg = TaskRegistry()
    task = reg.get("good")
    assert isinstance(task, Task) and task.name == "good" and task.description == "a fake task"
    assert fake_dist["layer"] in LAYERS  # the task's layer vocabulary is registered when it loads
    assert reg.list()["good"] == ("fakeplug", "loaded")
    assert reg.get("factory").name == "factory"  # an entry point may also name a factory
    assert task.owns("goodnets.yaml") and task.owns("path/to/goodnetx.yaml") and not task.owns("yolo11n-seg.yaml")


def test_failing_plugin_is_reported_by_name_and_skipped(fake_dist):
    reg = TaskRegistry()
    with pytest.warns(PluginLoadWarning) as rec:
        loaded = reg.load_all()
    messages = " | ".join(str(w.message) for w in rec)
    assert "'broken' from 'fakeplug'" in messages and "missing library" in messages
    assert "'notatask'" in messages and "'misnamed'" in messages
    assert {"segment", "good", "factory"} <= set(loaded) and not {"broken", "notatask", "misnamed"} & set(loaded)
    status = reg.list()
    assert status["broken"][0] == "fakeplug" and status["broken"][1].startswith("failed: ImportError")
    assert status["notatask"][1].startswith("failed: TypeError")
    assert "task called 'good'" in status["misnamed"][1]
    assert status["segment"] == ("yoloseg", "loaded")
    with pytest.raises(ImportError, match="'broken' from 'fakeplug' failed to load"):
        reg.get("broken")


def test_autoload_switch_keeps_builtin_only(fake_dist, monkeypatch):
    monkeypatch.setenv(DISABLE_ENV, "1")
    reg = TaskRegistry()
    loaded = reg.load_all()
    assert set(loaded) == {"segment"}
    assert reg.list()["good"] == ("fakeplug", "disabled")
    assert fake_dist["good"] not in sys.modules and fake_dist["broken"] not in sys.modules
    with pytest.raises(ValueError, match=DISABLE_ENV):
        reg.get("good")
    monkeypatch.setenv(DISABLE_ENV, "0")
    reg.refresh()
    assert reg.get("good").name == "good"


def test_third_party_cannot_shadow_builtin(tmp_path, monkeypatch):
    dist = tmp_path / "shadow-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: shadow\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[yoloseg.tasks]\nsegment = os:getcwd\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = TaskRegistry()
    with pytest.warns(PluginLoadWarning, match="provided by both"):
        listing = reg.list()
    assert listing["segment"][0] == "yoloseg"
    assert reg.get("segment").predictor == "yoloseg.engine.predictor:Predictor"


def test_unknown_task_names_the_closest():
    with pytest.raises(ValueError, match="unknown task 'segmnet'; did you mean 'segment'"):
        TaskRegistry().get("segmnet")


def test_builtin_segment_from_yoloseg_distribution():
    reg = TaskRegistry()
    assert reg.list()["segment"][0] == "yoloseg"
    seg = get_task("segment")
    assert seg.name == "segment" and seg.default_model == "yolo11n-seg.yaml"
    for scale in "nsmlx":
        assert seg.owns(f"yolo11{scale}-seg.yaml")
    assert not seg.owns("yolo11n.yaml")
    assert seg.predictor == "yoloseg.engine.predictor:Predictor"
    assert seg.validator == "yoloseg.engine.validator:Validator"
    assert seg.trainer == "yoloseg.engine.trainer:Trainer"
    assert seg.exporter == "yoloseg.engine.exporter:Exporter"
    assert isinstance(seg.loss, LazyObject) and seg.loss.spec == "yoloseg.loss:SegmentationLoss"


def test_segment_builds_its_model():
    model = get_task("segment").build_model("yolo11n-seg.yaml", nc=3)
    assert model.nc == 3 and model.task == "segment"
    assert get_task("segment").resolve("build_model").__module__.startswith("yoloseg.nn")


def test_runtime_registration_and_task_validation():
    reg = TaskRegistry()
    toy = Task(name="toy", build_model=lambda cfg, nc=None: ("built", cfg), predictor="os.path:join")
    reg.register(toy)
    assert reg.get("toy") is toy and reg.list()["toy"] == ("<runtime>", "loaded")
    assert toy.build_model("x.yaml") == ("built", "x.yaml")
    assert toy.resolve("predictor") is __import__("os").path.join
    with pytest.raises(ValueError, match="already registered"):
        reg.register(Task(name="toy"))
    with pytest.raises(NotImplementedError, match="'toy' does not provide a trainer"):
        toy.resolve("trainer")
    with pytest.raises(ValueError, match="lowercase identifier"):
        Task(name="Bad Name")
    with pytest.raises(ValueError, match="module:attr"):
        Task(name="x", predictor="no_colon")
    with pytest.raises(ValueError, match="callable or a 'module:attr'"):
        Task(name="x", loss=3)


def test_importing_tasks_is_cheap():
    # Listing tasks must not pull in torch, and importlib.metadata loads only when a task is looked up.
    code = ("import sys, yoloseg.tasks, yoloseg.cli; "
            "print('importlib.metadata' in sys.modules, 'torch' in sys.modules); "
            "yoloseg.tasks.list_tasks(); print('importlib.metadata' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False", "True", "False"]
