"""Schemas of the ``analysis`` group (critical points and loss landscape)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mlcli.config.schemas.base import bound


class Directions(enum.Enum):
    """Directions of the loss-landscape slices."""

    random = "random"  # random, filter-normalized (Li et al., 2018)
    hessian = "hessian"  # the top and bottom Hessian eigenvectors


@dataclass
class HessianSchema:
    """Gradient norm and Hessian eigenvalues of the training loss, and the verdict."""

    every: int = bound(0, ge=0)  # also every N epochs (0: only at the end of each fold)
    max_samples: int = bound(2048, ge=1)  # training rows the loss is computed on
    grad_tol: float = bound(1e-3, gt=0.0)  # gradient norm at or below which a point is critical
    eig_tol: float = bound(1e-6, ge=0.0)  # |eigenvalue| at or below which it counts as zero
    exact_max_params: int = bound(2000, ge=0)  # exact Hessian up to this many parameters
    k: int = bound(5, ge=1)  # extreme eigenvalues from Lanczos above that
    escape: bool = False  # at a saddle, step along the most negative eigenvector and go on
    escape_step: float = bound(0.5, gt=0.0)  # length of that step (parameter-space norm)


@dataclass
class LandscapeSchema:
    """Loss along 1-D and 2-D slices through the final weights, saved as PNG plots."""

    directions: Directions = Directions.random
    span: float = bound(1.0, gt=0.0)
    points_1d: int = bound(41, ge=3)
    points_2d: int = bound(21, ge=3)
    max_samples: int = bound(2048, ge=1)


@dataclass
class TrajectorySchema:
    """The parameters at every epoch's end (and at the start), and the loss on a grid around
    the path they took: an optimizer's trajectory on an error surface."""

    max_params: int = bound(4, ge=1)  # record only models this small (each parameter a row)
    points: int = bound(41, ge=3)  # grid points per axis of the loss surface (first two)
    margin: float = bound(0.3, ge=0.0)  # the grid spans the path's box plus this fraction
    max_samples: int = bound(2048, ge=1)


@dataclass
class AnalysisSchema:
    """Which analyses run; options combine: ``analysis=[hessian,landscape]``."""

    _target_: str = "mlcli.analysis.Analyzer"
    _partial_: bool = True
    hessian: HessianSchema | None = None
    landscape: LandscapeSchema | None = None
    trajectory: TrajectorySchema | None = None


SCHEMAS: dict[str, type] = {"base": AnalysisSchema}
