"""What the target is, decided in one place: classification, regression or survival (data.task; the Schema records it,
so a bundle knows its own). Every step asks its task for what differs between them (target checks, label encoding,
the network head and loss, metrics and their direction, baselines, predict's columns) instead of branching on the
target; a new task is a new module here with the same members, registered in TASKS.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medflow.params import Params, ParamsError
from medflow.tasks.classification import Classification
from medflow.tasks.regression import Regression
from medflow.tasks.segmentation import Segmentation
from medflow.tasks.survival import Survival

if TYPE_CHECKING:
    from medflow.data.features import Schema

Task = Classification | Regression | Survival | Segmentation
TASKS: dict[str, Task] = {t.name: t for t in (Classification(), Regression(), Survival(), Segmentation())}


def named(name: str) -> Task:
    if name not in TASKS:
        raise ParamsError(f"data.task={name!r} is not a task medflow knows: {', '.join(TASKS)}")
    return TASKS[name]


def for_params(params: Params) -> Task:
    """The task params ask for, once its metric and training settings are checked against it (one line each)."""
    task = named(params.data.task)
    task.check_params(params)
    return task


def of(schema: Schema) -> Task:
    """The task a cleaned table or a bundle was made for."""
    return named(schema.outcome)
