"""Schemas of the ``model`` group."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from mlcli.config.schemas.base import bound


class Activation(enum.Enum):
    """Hidden-layer nonlinearity."""

    relu = "relu"
    sigmoid = "sigmoid"
    tanh = "tanh"
    gelu = "gelu"


class Head(enum.Enum):
    """``sequence``: one prediction per sequence (pooled); ``token``: one per element."""

    sequence = "sequence"
    token = "token"


class Pooling2d(enum.Enum):
    """Downsampling after each convolution block."""

    max = "max"
    avg = "avg"
    none = "none"


class Switch(enum.Enum):
    """On, off, or decided from the data (the model builder says how)."""

    auto = "auto"
    on = "on"
    off = "off"


class GlobalPooling(enum.Enum):
    """Pooling over the valid positions of a sequence."""

    mean = "mean"
    max = "max"


class Positions(enum.Enum):
    """Position information: fixed sinusoids, learned embeddings, or none (a set)."""

    sinusoidal = "sinusoidal"
    learned = "learned"
    none = "none"


@dataclass
class LinearSchema:
    """``y = b + w·x``."""

    _target_: str = "mlcli.models.linear"


@dataclass
class MLPSchema:
    """A multi-layer perceptron."""

    _target_: str = "mlcli.models.mlp"
    hidden: list[int] = field(default_factory=lambda: [128])
    activation: Activation = Activation.relu
    batch_norm: bool = False
    dropout: float = bound(0.0, ge=0.0, lt=1.0)


@dataclass
class SigmoidSumSchema:
    """``y = b + Σᵢ cᵢ·σ(bᵢ + wᵢ·x)``."""

    _target_: str = "mlcli.models.sigmoid_sum"
    n_units: int = bound(10, ge=1)


@dataclass
class ReluSumSchema:
    """``y = b + Σ`` of ``n_units`` hard sigmoids, each two ReLUs."""

    _target_: str = "mlcli.models.relu_sum"
    n_units: int = bound(10, ge=1)


@dataclass
class CNNSchema:
    """Convolution blocks then a classifier head, for C×H×W images."""

    _target_: str = "mlcli.models.cnn"
    channels: list[int] = field(default_factory=lambda: [32, 64])
    kernel_size: int = bound(3, ge=1)
    pooling: Pooling2d = Pooling2d.max
    batch_norm: bool = True
    hidden: list[int] = field(default_factory=lambda: [128])
    dropout: float = bound(0.0, ge=0.0, lt=1.0)
    max_map_px: int = bound(8, ge=0)
    global_pool: Switch = Switch.auto


class ResNetStem(enum.Enum):
    """The first layers of a ResNet: torchvision's, or a small-picture one, or by picture size."""

    auto = "auto"
    imagenet = "imagenet"
    small = "small"


@dataclass
class ResNetSchema:
    """torchvision's ResNet-18/34, from scratch (no pretrained weights, ever)."""

    _target_: str = "mlcli.models.resnet"
    depth: int = bound(18, ge=18, le=34)
    stem: ResNetStem = ResNetStem.auto
    batch_norm: bool = True
    dropout: float = bound(0.0, ge=0.0, lt=1.0)


@dataclass
class CNN1dSchema:
    """A small fully convolutional network over sequences."""

    _target_: str = "mlcli.models.cnn1d"
    channels: list[int] = field(default_factory=lambda: [64, 64, 64])
    kernel_size: int = bound(5, ge=1)
    dilation_growth: int = bound(2, ge=1)
    batch_norm: bool = True
    dropout: float = bound(0.0, ge=0.0, lt=1.0)
    head: Head = Head.sequence
    pooling: GlobalPooling = GlobalPooling.mean
    activation: Activation = Activation.relu
    embed_dim: int = bound(32, ge=1)


@dataclass
class AttentionSchema:
    """A self-attention encoder over a set/sequence of vectors or tokens."""

    _target_: str = "mlcli.models.attention"
    d_model: int = bound(64, ge=1)
    n_heads: int = bound(4, ge=1)
    n_layers: int = bound(2, ge=1)
    d_ff: int = bound(128, ge=1)
    dropout: float = bound(0.1, ge=0.0, lt=1.0)
    head: Head = Head.sequence
    positions: Positions = Positions.sinusoidal
    norm_first: bool = True


@dataclass
class TransformerSchema:
    """An encoder-decoder Transformer for sequence-to-sequence tasks."""

    _target_: str = "mlcli.models.transformer"
    d_model: int = bound(64, ge=1)
    n_heads: int = bound(4, ge=1)
    n_layers: int = bound(2, ge=1)
    d_ff: int = bound(256, ge=1)
    dropout: float = bound(0.1, ge=0.0, lt=1.0)
    norm_first: bool = True


SCHEMAS: dict[str, type] = {
    "linear": LinearSchema,
    "mlp": MLPSchema,
    "sigmoid_sum": SigmoidSumSchema,
    "relu_sum": ReluSumSchema,
    "cnn": CNNSchema,
    "cnn1d": CNN1dSchema,
    "resnet": ResNetSchema,
    "attention": AttentionSchema,
    "transformer": TransformerSchema,
}
