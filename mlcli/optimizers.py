"""Optimizer construction with the fast paths that do not change the numbers.

``torch.optim`` picks its multi-tensor (``foreach``) implementation by default only for CUDA
tensors; on the CPU it loops over parameters in Python, one small kernel per operation per
tensor. The ``foreach`` implementation performs the same elementwise arithmetic with the same
scalars, so mlcli asks for it everywhere (unless the config sets ``foreach`` or ``fused``).
``fused=True`` is never chosen for the user: on the CPU it rounds differently, and in torch 2.13
it silently applies wrong updates to gradients whose strides differ from the parameter's.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import torch
from omegaconf import DictConfig

from mlcli.build import instantiate


def build_optimizer(
    node: DictConfig, params: Iterable[torch.Tensor], allow: list[str]
) -> torch.optim.Optimizer:
    """``instantiate(cfg.optim)(params)``, with ``foreach=True`` where the optimizer takes it."""
    factory: Any = instantiate(node, "optim", allow)
    target = getattr(factory, "func", factory)
    extra: dict[str, Any] = {}
    keywords = getattr(factory, "keywords", {}) or {}
    try:
        accepted = set(inspect.signature(target).parameters)
    except (TypeError, ValueError):
        accepted = set()
    if "foreach" in accepted and keywords.get("foreach") is None and not keywords.get("fused"):
        extra["foreach"] = True
    optimizer: torch.optim.Optimizer = factory(params, **extra)
    return optimizer
