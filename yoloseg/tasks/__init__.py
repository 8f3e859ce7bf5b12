"""Tasks and their registry (entry point group `yoloseg.tasks`)."""

from yoloseg.tasks.base import LazyObject, Task, import_object
from yoloseg.tasks.registry import (
    DISABLE_ENV,
    ENTRY_POINT_GROUP,
    PluginLoadWarning,
    TaskRegistry,
    get_task,
    list_tasks,
    register_task,
    task_for_model,
    task_names,
)

__all__ = [
    "DISABLE_ENV", "ENTRY_POINT_GROUP", "LazyObject", "PluginLoadWarning", "Task", "TaskRegistry", "get_task",
    "import_object", "list_tasks", "register_task", "task_for_model", "task_names",
]
