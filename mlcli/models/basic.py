"""Linear models and multi-layer perceptrons."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
}


def choice(value: Any) -> str:
    """The plain string of a config choice (configs pass enum members, e.g. ``Head.token``)."""
    return str(getattr(value, "value", value))


def activation_layer(name: Any) -> nn.Module:
    name = choice(name)
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
        layers.append(activation_layer(activation))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = size
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def sigmoid_sum(in_shape: Sequence[int], out_features: int, n_units: int = 10) -> nn.Module:
    """A constant plus a sum of sigmoids: ``y = b + Σᵢ cᵢ·σ(bᵢ + wᵢ·x)``, i = 1..``n_units``.

    With enough units it approximates any continuous curve (the course's "piecewise-linear
    curve = constant + sum of sigmoids"); for regression.
    """
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(in_shape), n_units),  # bᵢ + wᵢ·x
        nn.Sigmoid(),
        nn.Linear(n_units, out_features),  # b + Σᵢ cᵢ·(...)
    )


def relu_sum(in_shape: Sequence[int], out_features: int, n_units: int = 10) -> nn.Module:
    """A constant plus ``n_units`` hard sigmoids, each made of two ReLUs:
    ``y = b + Σⱼ cⱼ·max(0, bⱼ + wⱼ·x)``, j = 1..2·``n_units``.

    A hard sigmoid (flat, a linear ramp, flat) is the difference of two ReLUs, so 2·n ReLUs
    represent any piecewise-linear curve with n ramps; for regression.
    """
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(in_shape), 2 * n_units),
        nn.ReLU(),
        nn.Linear(2 * n_units, out_features),
    )
