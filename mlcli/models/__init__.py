"""Model builders: plain functions ``(in_shape, out_features, **hparams) -> nn.Module``.

Besides ``in_shape`` (one example's shape) and ``out_features`` (classes, tags, vocabulary size
or regression targets), the runner passes what a builder needs to read the data
(:func:`data_inputs`): ``vocab_size`` when the inputs are token ids, and ``variable_length=True``
when the sequences are zero-padded with their lengths. A builder without those parameters cannot
read such data, and :func:`build_model` says so before anything is built.

Forward conventions: ``model(x)`` for fixed-size inputs; ``model(x, lengths)`` for variable-length
sequences; seq2seq models take ``model(source, lengths, target_in)`` (teacher forcing) and
``model.generate(source, lengths, max_length)`` (greedy decoding to EOS).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from mlcli.data.base import Dataset
from mlcli.models.basic import linear, mlp, relu_sum, sigmoid_sum
from mlcli.models.conv import cnn, cnn1d
from mlcli.models.selfattention import attention, transformer

__all__ = [
    "attention",
    "build_model",
    "cnn",
    "cnn1d",
    "data_inputs",
    "linear",
    "mlp",
    "relu_sum",
    "sigmoid_sum",
    "transformer",
]


def data_inputs(dataset: Dataset) -> dict[str, Any]:
    """The keyword arguments a model builder receives from the data."""
    inputs: dict[str, Any] = {"in_shape": dataset.in_shape, "out_features": dataset.out_features}
    if dataset.vocab_size is not None:
        inputs["vocab_size"] = dataset.vocab_size
    if dataset.lengths is not None:
        inputs["variable_length"] = True
    return inputs


def check_inputs(builder: Callable[..., Any], name: str, dataset: Dataset) -> None:
    """Raise ``ValueError`` naming what ``builder`` cannot read in ``dataset``."""
    parameters = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    sequence_models = "attention, cnn1d"
    if dataset.vocab_size is not None and "vocab_size" not in parameters:
        raise ValueError(
            f"model {name} takes real-valued features, but dataset {dataset.name} holds token ids "
            f"(vocab_size={dataset.vocab_size}); use a model that embeds tokens: {sequence_models}"
        )
    if dataset.lengths is not None and "variable_length" not in parameters:
        raise ValueError(
            f"model {name} takes fixed-size inputs, but dataset {dataset.name} holds "
            f"variable-length sequences; use a model with padding masks: {sequence_models}"
        )


def build_model(node: Any, dataset: Dataset, allow: Any = ()) -> nn.Module:
    """Build ``node`` (a ``model`` config) for ``dataset``, or say why that cannot work."""
    from hydra.utils import get_method

    from mlcli.build import check_target, instantiate

    target = str(node._target_)
    check_target("model", target, allow)
    name = target.rsplit(".", 1)[-1]
    check_inputs(get_method(target), name, dataset)
    model = instantiate(node, "model", allow, **data_inputs(dataset))
    if not isinstance(model, nn.Module):
        raise TypeError(f"model._target_ {target} returned {type(model).__name__}, not nn.Module")
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
