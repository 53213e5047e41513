"""Structured-config schemas, one module per config group.

Each option file in ``conf/<group>/`` extends one schema with
``defaults: [/schema/<group>/<name>@_here_, _self_]``; the schemas are stored in Hydra's
ConfigStore under ``schema/<group>/<name>`` by :func:`mlcli.config.register_schemas`.
"""

from __future__ import annotations

from mlcli.config.schemas import analysis, augment, cv, dataset, model, optim, run, scheduler
from mlcli.config.schemas.run import RunSchema

SCHEMAS: dict[str, dict[str, type]] = {
    "": run.SCHEMAS,
    "dataset": dataset.SCHEMAS,
    "model": model.SCHEMAS,
    "optim": optim.SCHEMAS,
    "scheduler": scheduler.SCHEMAS,
    "cv": cv.SCHEMAS,
    "analysis": analysis.SCHEMAS,
    "augment": augment.SCHEMAS,
}

__all__ = ["SCHEMAS", "RunSchema"]
