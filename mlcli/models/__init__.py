"""Model builders: plain functions ``(in_shape, out_features, **hparams) -> nn.Module``.

Besides ``in_shape`` (one example's shape) and ``out_features`` (classes, tags, vocabulary size
or regression targets), a builder receives from the data, if it has the parameter:
``vocab_size`` when the inputs are token ids (a builder without it cannot read them, and
:func:`build_model` says so), and ``variable_length=True`` when the inputs are zero-padded
sequences with their valid lengths.

Forward conventions: ``model(x)``; a model whose ``forward`` has a ``lengths`` parameter gets
``model(x, lengths)`` for variable-length sequences (a fixed-size model such as ``mlp`` reads the
zero-padded sequences as they are); seq2seq models take ``model(source, lengths, target_in)``
(teacher forcing) and ``model.generate(source, lengths, max_length)`` (greedy decoding to EOS).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from mlcli.data.base import Dataset
from mlcli.models.basic import linear, mlp, relu_sum, sigmoid_sum
from mlcli.models.conv import cnn, cnn1d
from mlcli.models.resnet import resnet
from mlcli.models.selfattention import attention, transformer

__all__ = [
    "attention",
    "build_model",
    "cnn",
    "cnn1d",
    "data_inputs",
    "linear",
    "mlp",
    "model_factory",
    "relu_sum",
    "resnet",
    "sigmoid_sum",
    "transformer",
]


def data_inputs(builder: Callable[..., Any], name: str, dataset: Dataset) -> dict[str, Any]:
    """The keyword arguments ``builder`` receives from ``dataset``, or a ``ValueError`` naming
    what it cannot read."""
    parameters = inspect.signature(builder).parameters
    any_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    inputs: dict[str, Any] = {"in_shape": dataset.in_shape, "out_features": dataset.out_features}
    if dataset.vocab_size is not None:
        if "vocab_size" not in parameters and not any_keyword:
            fits = "transformer" if dataset.task == "seq2seq" else "attention or cnn1d"
            raise ValueError(
                f"model {name} takes real-valued features, but dataset {dataset.name} holds token "
                f"ids (vocab_size={dataset.vocab_size}); use a model that embeds tokens: {fits}"
            )
        inputs["vocab_size"] = dataset.vocab_size
    if dataset.lengths is not None and ("variable_length" in parameters or any_keyword):
        inputs["variable_length"] = True
    return inputs


def model_factory(
    node: Any, dataset: Dataset, allow: Any = ()
) -> Callable[[tuple[int, ...] | None], nn.Module]:
    """``in_shape -> model`` for ``node`` (a ``model`` config) on ``dataset``: the config is
    checked and composed once, and each call builds a fresh model (``in_shape`` overrides the
    dataset's when preprocessing changes it, e.g. one-hot columns)."""
    from mlcli.config.targets import admit, factory

    target = str(node._target_)
    name = target.rsplit(".", 1)[-1]
    inputs = data_inputs(admit("model", target, allow).obj, name, dataset)
    builder = factory(node, "model", allow)

    def build(in_shape: tuple[int, ...] | None = None) -> nn.Module:
        model = builder(**{**inputs, **({"in_shape": in_shape} if in_shape is not None else {})})
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"model._target_ {target} returned {type(model).__name__}, not nn.Module"
            )
        decodes = callable(getattr(model, "generate", None))
        if dataset.task == "seq2seq" and not decodes:
            raise ValueError(
                f"dataset {dataset.name} is sequence-to-sequence: it needs a model that decodes "
                f"(has generate()), such as model=transformer; model {name} does not"
            )
        if decodes and dataset.task != "seq2seq":
            raise ValueError(
                f"model {name} is sequence-to-sequence, but dataset {dataset.name} is a "
                f"{dataset.task} task"
            )
        return model

    return build


def build_model(
    node: Any, dataset: Dataset, allow: Any = (), in_shape: tuple[int, ...] | None = None
) -> nn.Module:
    """Build ``node`` (a ``model`` config) for ``dataset``, or say why that cannot work.

    ``in_shape`` overrides the dataset's when preprocessing changes it (one-hot columns).
    """
    return model_factory(node, dataset, allow)(in_shape)
