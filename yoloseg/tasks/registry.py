"""Task registry: tasks published through the `yoloseg.tasks` entry point group.

Discovery reads installed distributions' metadata (importlib.metadata, imported lazily) the first time a
task is asked for; an entry point is loaded (`ep.load()`) only when its task is needed. The built-in
`segment` task is registered by yoloseg's own pyproject.toml exactly like a third-party plugin; it is also
known without metadata, so a source checkout that is not installed still works.

- A plugin that fails to import (or does not provide a `Task`) is reported by name in a warning and skipped.
- `YOLOSEG_DISABLE_PLUGIN_AUTOLOAD=1` stops loading tasks from other distributions; yoloseg's own still load.
- `register_task(task)` adds a task at run time (tests, notebooks) without packaging.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

from yoloseg.tasks.base import Task, import_object

__all__ = [
    "ENTRY_POINT_GROUP", "DISABLE_ENV", "BUILTIN_DIST", "TaskRegistry", "TaskEntry", "PluginLoadWarning",
    "get_task", "list_tasks", "register_task", "task_names", "task_for_model", "default_registry",
]

ENTRY_POINT_GROUP = "yoloseg.tasks"
DISABLE_ENV = "YOLOSEG_DISABLE_PLUGIN_AUTOLOAD"
BUILTIN_DIST = "yoloseg"
_BUILTINS = {"segment": "yoloseg.tasks.segment:task"}

# Entry statuses, as shown by `yoloseg plugins`.
AVAILABLE, LOADED, FAILED, DISABLED = "available", "loaded", "failed", "disabled"


class PluginLoadWarning(UserWarning):
    """A task plugin could not be loaded and was skipped."""


@dataclass
class TaskEntry:
    """One published task: where it comes from and whether it loaded."""

    name: str
    value: str  # "module:attr"
    dist: str  # distribution that provides it
    ep: object = None  # importlib.metadata.EntryPoint, None for built-ins without metadata / run-time tasks
    status: str = AVAILABLE
    error: str | None = None
    task: Task | None = None

    @property
    def builtin(self) -> bool:
        return _canon(self.dist) == BUILTIN_DIST


def _canon(name: str | None) -> str:
    return (name or "").strip().lower().replace("_", "-").replace(".", "-")


def _autoload_disabled() -> bool:
    return os.environ.get(DISABLE_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


class TaskRegistry:
    """Name -> task, filled lazily from entry points. Use the module functions for the shared registry."""

    def __init__(self, group: str = ENTRY_POINT_GROUP):
        self.group = group
        self._entries: dict[str, TaskEntry] | None = None

    # ------------------------------------------------------------------------------------ discovery
    def refresh(self) -> None:
        """Forget what was discovered; the next lookup reads the installed metadata again."""
        self._entries = None

    def _discover(self) -> dict[str, TaskEntry]:
        if self._entries is not None:
            return self._entries
        from importlib.metadata import entry_points  # costs tens of ms: only when a task is needed

        disabled = _autoload_disabled()
        entries: dict[str, TaskEntry] = {}
        for ep in sorted(entry_points(group=self.group), key=lambda e: (e.name, e.value)):
            dist = getattr(getattr(ep, "dist", None), "name", None) or "unknown"
            entry = TaskEntry(ep.name, ep.value, dist, ep)
            if disabled and not entry.builtin:
                entry.status, entry.error = DISABLED, f"{DISABLE_ENV} is set"
            old = entries.get(ep.name)
            if old is not None:
                if old.value == entry.value and _canon(old.dist) == _canon(entry.dist):
                    continue  # the same distribution seen twice on sys.path
                keep, drop = (old, entry) if old.builtin or not entry.builtin else (entry, old)
                warnings.warn(f"yoloseg: task '{ep.name}' is provided by both '{old.dist}' and '{entry.dist}'; "
                              f"using the one from '{keep.dist}'", PluginLoadWarning, stacklevel=3)
                entry = keep
            entries[ep.name] = entry
        for name, value in _BUILTINS.items():  # a source checkout without installed metadata
            if name not in entries or not entries[name].builtin:
                entries[name] = TaskEntry(name, value, BUILTIN_DIST)
        self._entries = entries
        return entries

    # ------------------------------------------------------------------------------------ loading
    def _load(self, entry: TaskEntry, warn: bool) -> Task | None:
        if entry.status in (LOADED, DISABLED, FAILED):
            return entry.task
        try:
            obj = entry.ep.load() if entry.ep is not None else import_object(entry.value)
            if callable(obj) and not isinstance(obj, Task):
                obj = obj()  # a factory returning the Task
            if not isinstance(obj, Task):
                raise TypeError(f"'{entry.value}' is a {type(obj).__name__}, not a yoloseg Task")
            if obj.name != entry.name:
                raise ValueError(f"entry point '{entry.name}' names a task called '{obj.name}'")
            obj.register_layers()
        except Exception as e:  # a broken plugin must not break yoloseg
            entry.status, entry.error = FAILED, f"{type(e).__name__}: {e}"
            if warn:
                warnings.warn(f"yoloseg: task plugin '{entry.name}' from '{entry.dist}' failed to load and was "
                              f"skipped ({entry.error})", PluginLoadWarning, stacklevel=3)
            return None
        entry.task, entry.status = obj, LOADED
        return obj

    def load_all(self) -> dict[str, Task]:
        """Load every enabled task; failures are warned about by name and skipped."""
        out = {}
        for name, entry in self._discover().items():
            task = self._load(entry, warn=True)
            if task is not None:
                out[name] = task
        return out

    # ------------------------------------------------------------------------------------ queries
    def names(self) -> list[str]:
        """Names of all published tasks (including disabled and failed ones), without loading any."""
        return sorted(self._discover())

    def get(self, name: str) -> Task:
        """The task called `name`, loading its plugin on first use."""
        if isinstance(name, Task):
            return name
        entries = self._discover()
        entry = entries.get(name)
        if entry is None:
            import difflib

            close = difflib.get_close_matches(str(name), list(entries), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ValueError(f"unknown task {name!r}{hint} (installed: {', '.join(sorted(entries))})")
        if entry.status == DISABLED:
            raise ValueError(f"task '{name}' from '{entry.dist}' is not loaded because {DISABLE_ENV} is set")
        task = self._load(entry, warn=False)
        if task is None:
            raise ImportError(f"task plugin '{name}' from '{entry.dist}' failed to load: {entry.error}")
        return task

    def list(self, load: bool = False) -> dict[str, tuple[str, str]]:
        """name -> (distribution, status); with `load=True` every enabled task is loaded first."""
        if load:
            self.load_all()
        return {name: (e.dist, e.status if e.error is None or e.status != FAILED else f"{FAILED}: {e.error}")
                for name, e in sorted(self._discover().items())}

    def entries(self) -> dict[str, TaskEntry]:
        return dict(self._discover())

    def register(self, task: Task, dist: str = "<runtime>", replace: bool = False) -> Task:
        """Add a task object directly (no packaging needed)."""
        if not isinstance(task, Task):
            raise ValueError(f"register_task expects a Task, got {type(task).__name__}")
        entries = self._discover()
        if task.name in entries and not replace:
            raise ValueError(f"task '{task.name}' is already registered by '{entries[task.name].dist}'")
        task.register_layers()
        entries[task.name] = TaskEntry(task.name, "", dist, None, LOADED, None, task)
        return task

    def for_model(self, model) -> Task | None:
        """The loaded task whose `model_configs` match a model YAML name, or None."""
        for task in self.load_all().values():
            if task.owns(model):
                return task
        return None


_DEFAULT: TaskRegistry | None = None


def default_registry() -> TaskRegistry:
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = TaskRegistry()
    return _DEFAULT


def get_task(name: str) -> Task:
    """The task called `name` (e.g. 'segment'); unknown names raise ValueError with the closest match."""
    return default_registry().get(name)


def list_tasks(load: bool = False) -> dict[str, tuple[str, str]]:
    """name -> (distribution, status) for every published task."""
    return default_registry().list(load=load)


def task_names() -> list[str]:
    return default_registry().names()


def register_task(task: Task, dist: str = "<runtime>", replace: bool = False) -> Task:
    return default_registry().register(task, dist=dist, replace=replace)


def task_for_model(model) -> Task | None:
    return default_registry().for_model(model)
