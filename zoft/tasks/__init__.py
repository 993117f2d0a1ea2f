"""Tasks, registered by name; importing this package registers every task module."""

from zoft.registry import Registry

TASKS: Registry = Registry("task")

from zoft.tasks import (  # noqa: E402,F401  (registration side effects)
    choice,
    glue,
    nli,
    squad,
    superglue,
)


def get_task(name: str):
    """A fresh instance of the task registered as `name`."""
    return TASKS.get(name)()
