"""The Task object: everything that differs between tasks, supplied to the task-agnostic engine.

A task is published through the `yoloseg.tasks` entry point group as a `Task` instance. Heavy pieces are
named by lazy "module:attr" strings so that listing tasks (`yoloseg plugins`) never imports torch:

    task = Task(
        name="toy",
        model_configs=("toy{scale}.yaml",),
        build_model="toy_pkg.model:build",
        loss="toy_pkg.loss:ToyLoss",
        postprocess="toy_pkg.post:decode",
        predictor="toy_pkg.engine:Predictor",
    )

`build_model`, `loss` and `postprocess` are callable right away (a string is imported on first call);
`resolve(field)` imports any lazy field (e.g. `task.resolve("predictor")` gives the class).
Engine classes are constructed as `Predictor(cfg, model, task)`, `Validator(cfg, model=None, task,
dataloader=None)`, `Trainer(cfg, task)`, `Exporter(cfg, model)`.
"""

from __future__ import annotations

import fnmatch
import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Task", "LazyObject", "import_object"]

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_SCALES = "nsmlx"


def import_object(spec: str):
    """Import `"package.module:attr.sub"` and return the attribute; errors name the spec."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"expected 'module:attr', got {spec!r}")
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImportError(f"'{spec}': module '{module_name}' has no attribute '{attr}'") from None
    return obj


class LazyObject:
    """A callable stand-in for `"module:attr"` that imports its target on first use."""

    __slots__ = ("spec", "_target")

    def __init__(self, spec: str):
        if not isinstance(spec, str) or ":" not in spec:
            raise ValueError(f"expected 'module:attr', got {spec!r}")
        self.spec = spec
        self._target = None

    def load(self):
        if self._target is None:
            self._target = import_object(self.spec)
        return self._target

    def __call__(self, *args, **kwargs):
        return self.load()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"LazyObject({self.spec!r})"


def _lazy(value, what: str):
    if value is None or isinstance(value, LazyObject):
        return value
    if isinstance(value, str):
        return LazyObject(value)
    if callable(value):
        return value
    raise ValueError(f"Task.{what} must be callable or a 'module:attr' string, got {value!r}")


def _settings(items, task: str) -> tuple:
    from yoloseg.cfg import task_setting
    from yoloseg.cfg.schema import Setting

    out, seen = [], set()
    for item in items or ():
        if isinstance(item, Setting):
            item = {k: getattr(item, k) for k in ("key", "default", "type", "help", "range", "choices")}
        if not isinstance(item, Mapping):
            raise ValueError(f"Task.settings of {task!r}: expected dicts of task_setting arguments, got {item!r}")
        s = task_setting(**{**item, "task": task})
        if s.key in seen:
            raise ValueError(f"Task.settings of {task!r}: setting '{s.key}' is declared twice")
        seen.add(s.key)
        out.append(s)
    return tuple(out)


@dataclass
class Task:
    """What a task supplies; see the module docstring. Only `name` is required."""

    name: str
    model_configs: tuple[str, ...] = ()  # model YAML names it owns; `{scale}` stands for n/s/m/l/x, globs allowed
    default_model: str | None = None  # what `yoloseg <task> train` builds when no model is given
    layers: Mapping[str, Callable | str] = field(default_factory=dict)  # model-YAML layer types it adds
    build_model: Callable | str | None = None  # (cfg: name|path|dict, nc=None) -> nn.Module
    loss: Callable | str | None = None  # (model, hyp) -> callable (preds, batch) -> (total, items)
    loss_names: tuple[str, ...] = ()  # names of the loss items, in order
    postprocess: Callable | str | None = None  # raw predictions -> per-image outputs
    results: type | str | None = None  # the Results type wrapping one image's outputs
    predictor: str | None = None
    validator: str | None = None
    trainer: str | None = None
    exporter: str | None = None
    description: str = ""
    # Settings of its own, beside yoloseg's: dicts of `yoloseg.cfg.task_setting` arguments (key, default,
    # type, help, range=None, choices=None) or the Setting objects it returns. They are accepted as
    # key=value, listed by `yoloseg <task> <mode> --help`, saved with the run, and reach the loss in `hyp`.
    settings: tuple = ()

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ValueError(f"Task.name must be a lowercase identifier such as 'segment', got {self.name!r}")
        self.settings = _settings(self.settings, self.name)
        if isinstance(self.model_configs, str):
            self.model_configs = (self.model_configs,)
        self.model_configs = tuple(self.model_configs)
        if not isinstance(self.layers, Mapping):
            raise ValueError(f"Task.layers must map layer names to builders, got {type(self.layers).__name__}")
        self.loss_names = tuple(self.loss_names)
        for what in ("build_model", "loss", "postprocess"):
            setattr(self, what, _lazy(getattr(self, what), what))
        for what in ("results", "predictor", "validator", "trainer", "exporter"):
            value = getattr(self, what)
            if isinstance(value, str) and ":" not in value:
                raise ValueError(f"Task.{what} must be a 'module:attr' string, got {value!r}")

    # ------------------------------------------------------------------------------------------------
    def resolve(self, what: str):
        """Import and return a lazy field: predictor, validator, trainer, exporter, results, build_model, ..."""
        if what not in {"predictor", "validator", "trainer", "exporter", "results", "build_model", "loss",
                        "postprocess"}:
            raise ValueError(f"Task has no lazy field {what!r}")
        value = getattr(self, what)
        if value is None:
            raise NotImplementedError(f"task '{self.name}' does not provide a {what}")
        if isinstance(value, LazyObject):
            return value.load()
        if isinstance(value, str):
            return import_object(value)
        return value

    def owns(self, model: str | Path) -> bool:
        """True when a model YAML name (or path) matches one of this task's `model_configs`."""
        name = Path(str(model)).name
        for pattern in self.model_configs:
            pats = [pattern.replace("{scale}", s) for s in _SCALES] if "{scale}" in pattern else [pattern]
            if any(fnmatch.fnmatchcase(name, p) for p in pats):
                return True
        return False

    def register_layers(self) -> None:
        """Add this task's layer types to the model-YAML vocabulary (`yoloseg.nn.registry`)."""
        if not self.layers:
            return
        from yoloseg.nn.registry import LAYERS

        for layer_name, builder in self.layers.items():
            fn = import_object(builder) if isinstance(builder, str) else builder
            if layer_name in LAYERS and LAYERS.get(layer_name) is fn:
                continue
            LAYERS.register(layer_name, fn)
