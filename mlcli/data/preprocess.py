"""Per-fold preprocessing: every statistic is fitted on the fold's training rows only.

Feature scaling (``dataset.normalize``) and the regression target's standardization are fitted on
``train_idx`` and applied to the fold's val and test rows, so nothing about val/test leaks in.
Tables with categorical columns or missing cells (``dataset=csv``) go through a scikit-learn
``ColumnTransformer`` fitted the same way: mean imputation and scaling of the numeric columns,
most-frequent imputation and one-hot encoding (unknown categories -> all zeros) of the
categorical ones. Variable-length sequences (``dataset.lengths``) are scaled per feature with
statistics over their valid time steps only, and their padding stays exactly zero; token ids are
never scaled. The user's text (``dataset.text``) is tokenized per fold: the vocabulary is fitted
on the training rows (:func:`mlcli.data.tokenize.tokenize_fold`) and kept in ``FoldData.vocabulary``
so the run can save it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from mlcli.config import enum_name
from mlcli.data.base import Dataset
from mlcli.data.tokenize import Vocabulary, tokenize_fold

if TYPE_CHECKING:  # torch is imported where tensors are made: apply_preprocess needs none
    import torch


@dataclass
class FoldData:
    """One fold's tensors, already normalized and on the training device."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    target_mean: float = 0.0
    target_std: float = 1.0
    # Valid lengths of zero-padded variable-length sequences (None for fixed-size inputs).
    lengths_train: torch.Tensor | None = None
    lengths_val: torch.Tensor | None = None
    lengths_test: torch.Tensor | None = None
    # Applied to every training batch (augmentation, then the fold's normalization): the
    # training tensors are then kept unnormalized. Never applied to val/test.
    train_transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    # Pictures read from disk per batch (mlcli.data.stream): the x_* tensors are then empty.
    stream: Any = None

    @property
    def n_train(self) -> int:
        """Training rows."""
        return self.stream.n("train") if self.stream is not None else len(self.x_train)

    @property
    def in_shape(self) -> tuple[int, ...]:
        """One example's shape, as the model reads it."""
        if self.stream is not None:
            return tuple(self.stream.in_shape)
        return tuple(self.x_train.shape[1:])

    # The fold's fitted vocabulary (a text dataset), saved with the run.
    vocabulary: Vocabulary | None = None
    # What predicting needs of the fitted preprocessing (:func:`apply_preprocess`): plain
    # numbers and arrays, the target's scaling included.
    preprocess: dict[str, Any] = field(default_factory=dict)


def valid_steps(lengths: np.ndarray, max_length: int) -> np.ndarray:
    """``(N, T)`` bool mask of the valid time steps of zero-padded sequences."""
    return np.arange(max_length)[None, :] < lengths[:, None]


class Normalizer:
    """Feature scaling whose statistics come from the training rows only.

    With ``lengths`` (sequences ``(N, T, F)``), statistics are per feature over valid steps.
    """

    def __init__(self, kind: str, x_train: np.ndarray, lengths: np.ndarray | None = None) -> None:
        self.kind = kind
        if lengths is not None:
            x_train = x_train[valid_steps(lengths, x_train.shape[1])]  # (valid steps, F)
        if kind == "standard":
            self.shift = x_train.mean(axis=0)
            scale = x_train.std(axis=0)
        elif kind == "channel":  # pictures (N, C, H, W): one statistic per colour channel
            self.shift = x_train.mean(axis=(0, 2, 3), keepdims=True)[0]
            scale = x_train.std(axis=(0, 2, 3), keepdims=True)[0]
        elif kind == "minmax":
            self.shift = x_train.min(axis=0)
            scale = x_train.max(axis=0) - self.shift
        else:
            self.shift, scale = np.zeros(1, np.float32), np.ones(1, np.float32)
        # A constant feature (e.g. a digits corner pixel) is only shifted, never divided by 0.
        self.scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
        self.shift = self.shift.astype(np.float32)

    def state(self) -> dict[str, Any]:
        """The fitted statistics (:func:`apply_preprocess` applies them)."""
        return {"kind": "normalize", "shift": self.shift, "scale": self.scale}

    def __call__(self, x: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
        out = (x - self.shift) / self.scale
        if lengths is not None:
            out[~valid_steps(lengths, x.shape[1])] = 0.0  # padding stays zero
        return out


def needs_table_encoder(dataset: Dataset) -> bool:
    """Categorical columns or missing cells: preprocess with :func:`table_encoder`."""
    return bool(dataset.categorical) or bool(np.isnan(dataset.X).any())


def table_encoder(kind: str, n_features: int, categorical: tuple[int, ...]) -> Any:
    """An unfitted ``ColumnTransformer`` for a flat table of numbers and category codes.

    Numeric columns: mean imputation, then ``kind`` scaling (standard | minmax | none);
    categorical columns: most-frequent imputation, then one-hot encoding. Fit it on a fold's
    training rows only.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler

    scalers = {"standard": StandardScaler(), "minmax": MinMaxScaler(), "none": "passthrough"}
    numeric = [j for j in range(n_features) if j not in categorical]
    return ColumnTransformer(
        [
            (
                "numeric",
                make_pipeline(
                    SimpleImputer(strategy="mean", keep_empty_features=True), scalers[kind]
                ),
                numeric,
            ),
            (
                "categorical",
                make_pipeline(
                    SimpleImputer(strategy="most_frequent", keep_empty_features=True),
                    OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                ),
                list(categorical),
            ),
        ],
        sparse_threshold=0.0,
    )


class Unscaled:
    """Token ids: categories, not quantities (never scaled)."""

    def state(self) -> dict[str, Any]:
        """Nothing fitted."""
        return {"kind": "none"}

    def __call__(self, x: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
        return x


class TableEncoder:
    """:func:`table_encoder` fitted on a fold's training rows; its fitted state as plain arrays
    (imputation values, scaling, one-hot categories) for :func:`apply_preprocess`."""

    def __init__(self, kind: str, x_train: np.ndarray, categorical: tuple[int, ...]) -> None:
        self.encoder = table_encoder(kind, x_train.shape[1], categorical)
        self.encoder.fit(x_train)
        self.kind = kind

    def __call__(self, x: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
        return np.asarray(self.encoder.transform(x), dtype=np.float32)

    def state(self) -> dict[str, Any]:
        """Every fitted number of the column transformer, by name."""
        numeric_pipe = self.encoder.named_transformers_["numeric"]
        imputer = numeric_pipe.steps[0][1]
        scaler = numeric_pipe.steps[1][1]
        category_pipe = self.encoder.named_transformers_["categorical"]
        numeric, categorical = (list(c) for _, _, c in self.encoder.transformers_[:2])
        state: dict[str, Any] = {
            "kind": "table",
            "scaling": self.kind,
            "numeric": np.asarray(numeric, dtype=np.int64),
            "categorical": np.asarray(categorical, dtype=np.int64),
            "numeric_fill": np.asarray(imputer.statistics_),
        }
        if self.kind == "standard":
            state["mean"] = np.asarray(scaler.mean_)
            state["scale"] = np.asarray(scaler.scale_)
        elif self.kind == "minmax":
            state["min"] = np.asarray(scaler.min_)
            state["scale"] = np.asarray(scaler.scale_)
        if categorical:
            state["category_fill"] = np.asarray(category_pipe.steps[0][1].statistics_)
            for j, values in enumerate(category_pipe.steps[1][1].categories_):
                state[f"categories_{j}"] = np.asarray(values)
        return state


def apply_preprocess(state: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """A fold's fitted feature preprocessing (a :meth:`state` of :class:`Normalizer`,
    :class:`TableEncoder` or :class:`Unscaled`) applied to new rows ``x``, as training applied
    it: the same operations on the same numbers, without the fitted objects (no pickle)."""
    kind = state["kind"]
    if kind == "none":
        return x
    if kind == "normalize":
        return np.asarray((x - state["shift"]) / state["scale"], dtype=np.float32)
    blocks = []
    numeric = np.asarray(state["numeric"], dtype=np.int64)
    if len(numeric):
        block = x[:, numeric].astype(np.float32)
        missing = np.isnan(block)
        if missing.any():
            fill = np.asarray(state["numeric_fill"])
            block[missing] = np.take(fill, np.nonzero(missing)[1])
        # sklearn's own in-place updates on float32 cells (StandardScaler casts its statistics
        # to float32 first; MinMaxScaler does not)
        if state["scaling"] == "standard":
            block -= np.asarray(state["mean"]).astype(np.float32)
            block /= np.asarray(state["scale"]).astype(np.float32)
        elif state["scaling"] == "minmax":
            block *= np.asarray(state["scale"])
            block += np.asarray(state["min"])
        blocks.append(block)
    categorical = np.asarray(state["categorical"], dtype=np.int64)
    for j, column in enumerate(categorical.tolist()):
        codes = x[:, column].astype(np.float32)
        missing = np.isnan(codes)
        codes[missing] = np.float32(state["category_fill"][j])
        values = np.asarray(state[f"categories_{j}"])
        blocks.append((codes[:, None] == values[None, :]).astype(np.float32))
    return np.asarray(np.hstack(blocks) if blocks else x[:, :0], dtype=np.float32)


def fold_scaler(dataset: Dataset, train_idx: np.ndarray, dataset_cfg: Any) -> Any:
    """The feature transform of one fold, fitted on ``train_idx`` alone.

    Called as ``scale(x)``, or ``scale(x, lengths)`` for variable-length sequences;
    ``scale.state()`` is what :func:`apply_preprocess` needs to apply it to new rows.
    """
    kind = enum_name(dataset_cfg.get("normalize", "standard"))
    if dataset.vocab_size is not None:
        return Unscaled()
    if dataset.lengths is not None:
        return Normalizer(kind, dataset.X[train_idx], dataset.lengths[train_idx])
    if not needs_table_encoder(dataset):
        return Normalizer(kind, dataset.X[train_idx])
    return TableEncoder(kind, dataset.X[train_idx], dataset.categorical)


def fold_tensors(
    dataset: Dataset,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    test_idx: np.ndarray,
    dataset_cfg: Any,
    device: torch.device,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 64,
    seed: int = 0,
) -> FoldData:
    """Normalize with statistics fitted on ``train_idx`` alone (text: tokenize with a
    vocabulary fitted on them), then move to ``device``. With ``augment``, the training tensors
    stay unnormalized and each training batch is augmented, then normalized (``train_transform``);
    pictures on disk get a :class:`~mlcli.data.stream.FoldStream` (``batch_size``, ``seed``)."""
    import torch

    if dataset.pictures is not None:
        return _streamed(
            dataset, train_idx, val_idx, test_idx, dataset_cfg, device, augment, batch_size, seed
        )
    vocabulary = None
    if dataset.text is not None:
        tokens = tokenize_fold(dataset.text, dataset.X, dataset.y, train_idx)
        vocabulary = tokens.vocabulary
        dataset = replace(dataset, X=tokens.X, y=tokens.y, lengths=tokens.lengths, text=None)
    scaler = fold_scaler(dataset, train_idx, dataset_cfg)
    lengths = dataset.lengths
    mean, std = 0.0, 1.0
    y = dataset.y
    if dataset.task == "regression" and dataset_cfg.get("normalize_target", True):
        mean = float(y[train_idx].mean())
        std = float(y[train_idx].std()) or 1.0
        y = ((y - mean) / std).astype(np.float32)

    def tensors(
        index: np.ndarray, scale: Callable[..., np.ndarray] = scaler
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = scale(dataset.X[index]) if lengths is None else scale(dataset.X[index], lengths[index])
        return torch.from_numpy(x).to(device), torch.from_numpy(y[index]).to(device)

    def lengths_of(index: np.ndarray) -> torch.Tensor | None:
        return None if lengths is None else torch.from_numpy(lengths[index]).to(device)

    transform = None
    if augment is None:
        x_train, y_train = tensors(train_idx)
    else:  # raw training pictures: each batch is augmented, then normalized
        if not isinstance(scaler, Normalizer):
            raise ValueError(f"augmentation transforms pictures; dataset {dataset.name} has none")
        shift = torch.from_numpy(scaler.shift).to(device)
        scale = torch.from_numpy(scaler.scale).to(device)
        x_train, y_train = tensors(train_idx, Unscaled())

        def transform(x: torch.Tensor) -> torch.Tensor:
            return (augment(x) - shift) / scale

    x_val, y_val = tensors(val_idx)
    x_test, y_test = tensors(test_idx) if len(test_idx) else (None, None)
    return FoldData(
        x_train,
        y_train,
        x_val,
        y_val,
        x_test,
        y_test,
        mean,
        std,
        lengths_train=lengths_of(train_idx),
        lengths_val=lengths_of(val_idx),
        lengths_test=lengths_of(test_idx) if len(test_idx) else None,
        train_transform=transform,
        vocabulary=vocabulary,
        preprocess={
            **scaler.state(),
            "target_mean": mean,
            "target_std": std,
            "in_shape": [int(d) for d in x_train.shape[1:]],  # after one-hot encoding
        },
    )


def _streamed(
    dataset: Dataset,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    test_idx: np.ndarray,
    dataset_cfg: Any,
    device: torch.device,
    augment: Callable[[torch.Tensor], torch.Tensor] | None,
    batch_size: int,
    seed: int,
) -> FoldData:
    """A fold of pictures read per batch: loaders and normalization fitted on its training
    pictures (one pass)."""
    import torch

    from mlcli.data.stream import FoldStream

    rows = {"train": train_idx, "val": val_idx, "test": test_idx}
    stream = FoldStream(dataset.pictures, dataset.y, rows, batch_size, device, seed)
    stream.fit_normalizer(enum_name(dataset_cfg.get("normalize", "channel")))
    transform = None
    if augment is not None:

        def transform(x: torch.Tensor) -> torch.Tensor:
            return stream.normalize(augment(x))

    empty = torch.zeros((0,), device=device)
    return FoldData(empty, empty, empty, empty, train_transform=transform, stream=stream)
