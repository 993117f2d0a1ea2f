"""Tasks, registered by name; importing this package registers every task module in it."""

import importlib
import pkgutil

from zoft.tasks.base import TASKS

# modules that hold shared machinery rather than tasks
_MACHINERY = {"base", "io", "lmbff", "metrics", "sampling"}
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _MACHINERY:
        importlib.import_module(f"{__name__}.{_module.name}")


def get_task(name: str):
    """A fresh instance of the task registered as `name`."""
    return TASKS.get(name)()
