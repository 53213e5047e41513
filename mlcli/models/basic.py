"""Linear models and multi-layer perceptrons."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
}


def _activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}"
        ) from None


def linear(in_shape: Sequence[int], out_features: int) -> nn.Module:
    """``y = b + w·x`` on the flattened input (softmax regression for a classification task)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), out_features))


def mlp(
    in_shape: Sequence[int],
    out_features: int,
    hidden: Sequence[int] = (128,),
    activation: str = "relu",
    batch_norm: bool = False,
    dropout: float = 0.0,
) -> nn.Module:
    """A multi-layer perceptron: [Linear → (BatchNorm) → activation → (Dropout)] × len(hidden)."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(in_shape)
    for size in hidden:
        layers.append(nn.Linear(width, size))
        if batch_norm:
            layers.append(nn.BatchNorm1d(size))
        layers.append(_activation(activation))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = size
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)
