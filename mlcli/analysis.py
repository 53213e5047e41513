"""Critical-point analysis: gradient norm, Hessian eigenvalues, minimum vs saddle, loss landscape.

A gradient near zero does not mean a local minimum: the point may be a saddle, told apart by the
eigenvalues of the Hessian of the training loss there (all positive: local minimum; mixed signs:
saddle point). The verdict rules, with ``grad_tol`` and ``eig_tol`` from ``analysis.hessian``:

* ``not critical``  — ‖∇L‖ > grad_tol;
* ``flat``          — every |λ| ≤ eig_tol (no curvature that tells anything);
* ``saddle point``  — λ_min < −eig_tol (a direction of descent exists);
* ``local minimum`` — otherwise (λ_min ≥ −eig_tol).

``min_ratio`` is the share of positive eigenvalues (the course's "minimum ratio": 1 at a strict
local minimum); it needs the whole spectrum, so it is given for an exact Hessian only. The loss
is the training loss on the fold's training rows (the first ``max_samples`` of them when there
are more), with the model in eval mode (batch norm uses its running statistics, no dropout). Up to
``exact_max_params`` parameters the Hessian is built exactly (double backward, rows batched with
vmap); above it, the ``k`` largest and smallest eigenvalues come from
Hessian-vector products with ARPACK's Lanczos (scipy ``eigsh``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from mlcli.data.base import Task

FlatLoss = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class CriticalPoint:
    """What the analysis found at one point of parameter space."""

    grad_norm: float
    loss: float
    min_eig: float
    max_eig: float
    min_ratio: float
    verdict: str
    reason: str
    method: str
    n_params: int
    eigenvalues: list[float] = field(default_factory=list)  # the computed ones (all if exact)
    min_eigvec: torch.Tensor | None = None

    def rows(self, epoch: int) -> list[tuple[int, str, str, float]]:
        """Long-form result rows (split ``train``: it is the training loss's landscape)."""
        numbers = {
            "grad_norm": self.grad_norm,
            "hess_min_eig": self.min_eig,
            "hess_max_eig": self.max_eig,
            "min_ratio": self.min_ratio,
            "at_saddle": float(self.verdict == "saddle point"),
            "at_minimum": float(self.verdict == "local minimum"),
        }
        return [
            (epoch, "train", name, value)
            for name, value in numbers.items()
            if not math.isnan(value)  # min_ratio exists only for an exact Hessian
        ]


def verdict(
    grad_norm: float, min_eig: float, max_eig: float, grad_tol: float, eig_tol: float
) -> tuple[str, str]:
    """The rule in the module docstring: (verdict, the numbers that decided it)."""
    if grad_norm > grad_tol:
        return "not critical", f"gradient norm {grad_norm:.3g} > grad_tol {grad_tol:g}"
    if max(abs(min_eig), abs(max_eig)) <= eig_tol:
        return "flat", f"all |eigenvalues| <= eig_tol {eig_tol:g}"
    if min_eig < -eig_tol:
        return (
            "saddle point",
            f"gradient norm {grad_norm:.3g} <= {grad_tol:g} and min eigenvalue {min_eig:.3g} < 0",
        )
    return (
        "local minimum",
        f"gradient norm {grad_norm:.3g} <= {grad_tol:g} and min eigenvalue {min_eig:.3g} >= "
        f"-{eig_tol:g}",
    )


def _lanczos_extremes(
    hvp: Callable[[np.ndarray], np.ndarray], n: int, k: int, tol: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(k largest eigenvalues, k smallest eigenvalues, eigenvector of the smallest) via ARPACK."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    k = max(1, min(k, n - 2))
    operator = LinearOperator((n, n), matvec=hvp, dtype=np.float64)
    top, _ = eigsh(operator, k=k, which="LA", tol=tol)
    # The smallest eigenvalues of H are the largest of (shift·I − H): the same fast convergence.
    shift = float(top.max())
    shifted = LinearOperator((n, n), matvec=lambda v: shift * v - hvp(v), dtype=np.float64)
    bottom, vectors = eigsh(shifted, k=k, which="LA", tol=tol)
    smallest = shift - bottom
    return np.sort(top), np.sort(smallest), vectors[:, int(np.argmax(bottom))]


class _Curvature:
    """Gradient, Hessian-vector products and the full Hessian of ``loss_of`` at ``point``.

    Double backward through one retained graph: much faster on CPU than torch.func's
    forward-over-reverse here, and the full Hessian comes in batched rows (``is_grads_batched``).
    """

    def __init__(self, loss_of: FlatLoss, point: torch.Tensor) -> None:
        self.point = point.detach().requires_grad_(True)
        self.loss = loss_of(self.point)
        (self.grad,) = torch.autograd.grad(self.loss, self.point, create_graph=True)
        self.n = self.point.numel()

    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        """H @ v."""
        v = v.to(self.point.dtype)
        if not self.grad.requires_grad:  # the loss is linear in the parameters: H = 0
            return torch.zeros_like(v)
        return torch.autograd.grad(self.grad, self.point, grad_outputs=v, retain_graph=True)[0]

    def hvp_numpy(self, v: np.ndarray) -> np.ndarray:
        """H @ v for scipy (float64 in and out)."""
        return self.hvp(torch.from_numpy(np.asarray(v))).double().numpy()

    def full(self, chunk: int = 256) -> torch.Tensor:
        """The whole (symmetrized) Hessian in float64."""
        eye = torch.eye(self.n, dtype=self.point.dtype)
        if not self.grad.requires_grad:
            return torch.zeros(self.n, self.n, dtype=torch.float64)
        rows = [
            torch.autograd.grad(
                self.grad, self.point, grad_outputs=eye[i : i + chunk],
                is_grads_batched=True, retain_graph=True,
            )[0]
            for i in range(0, self.n, chunk)
        ]  # fmt: skip
        matrix = torch.cat(rows).double()
        return (matrix + matrix.T) / 2


def _min_eigenvector(matrix: np.ndarray) -> torch.Tensor:
    """Eigenvector of the smallest eigenvalue of a symmetric matrix."""
    if len(matrix) <= 64:
        return torch.from_numpy(np.linalg.eigh(matrix)[1][:, 0])
    from scipy.sparse.linalg import eigsh

    shift = float(np.abs(matrix).sum(axis=1).max())  # >= the spectral radius (Gershgorin)
    _, vectors = eigsh(shift * np.eye(len(matrix)) - matrix, k=1, which="LA", tol=1e-8)
    return torch.from_numpy(vectors[:, 0])


def analyze(
    loss_of: FlatLoss,
    point: torch.Tensor,
    *,
    grad_tol: float = 1e-3,
    eig_tol: float = 1e-6,
    exact_max_params: int = 2000,
    k: int = 5,
    lanczos_tol: float = 1e-6,
) -> CriticalPoint:
    """Analyze ``loss_of`` (a function of the flat parameter vector) at ``point``."""
    curvature = _Curvature(loss_of, point)
    n = curvature.n
    grad_norm = float(curvature.grad.detach().norm())
    if n <= exact_max_params:
        matrix = curvature.full()
        # All eigenvalues (eigvalsh is several times cheaper than a full eigh), then the one
        # eigenvector needed (escape direction) by Lanczos on the dense matrix.
        eigenvalues = torch.linalg.eigvalsh(matrix)
        min_eig, max_eig = float(eigenvalues[0]), float(eigenvalues[-1])
        min_ratio = float((eigenvalues > 0).double().mean())
        computed = eigenvalues.tolist()
        min_vec = _min_eigenvector(matrix.numpy())
        method = f"exact Hessian ({n} parameters)"
    else:
        top, bottom, vec = _lanczos_extremes(curvature.hvp_numpy, n, k, lanczos_tol)
        min_eig, max_eig = float(bottom[0]), float(top[-1])
        # The share of positive eigenvalues needs the whole spectrum; estimates from a few Lanczos
        # vectors cannot resolve the sign of the many eigenvalues near zero, so none is given.
        min_ratio = math.nan
        computed = sorted([*bottom.tolist(), *top.tolist()])
        min_vec = torch.from_numpy(vec)
        method = f"Lanczos on Hessian-vector products ({n} parameters, k={k})"
    label, reason = verdict(grad_norm, min_eig, max_eig, grad_tol, eig_tol)
    return CriticalPoint(
        grad_norm=grad_norm,
        loss=float(curvature.loss.detach()),
        min_eig=min_eig,
        max_eig=max_eig,
        min_ratio=min_ratio,
        verdict=label,
        reason=reason,
        method=method,
        n_params=n,
        eigenvalues=computed,
        min_eigvec=min_vec.to(point.dtype),
    )


def top_eigenvector(loss_of: FlatLoss, point: torch.Tensor, exact_max_params: int) -> torch.Tensor:
    """The eigenvector of the Hessian's largest eigenvalue at ``point``."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    curvature = _Curvature(loss_of, point)
    if curvature.n <= exact_max_params:
        return -_min_eigenvector(-curvature.full().numpy()).to(point.dtype)
    operator = LinearOperator((curvature.n,) * 2, matvec=curvature.hvp_numpy, dtype=np.float64)
    return torch.from_numpy(eigsh(operator, k=1, which="LA")[1][:, 0]).to(point.dtype)


class FlatModel:
    """A model's trainable parameters as one flat vector, and its loss as a function of it."""

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> None:
        self.model = model
        self.names = [name for name, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        self.shapes = [params[name].shape for name in self.names]
        self.sizes = [math.prod(s) for s in self.shapes]
        self.buffers = dict(model.named_buffers())
        self.x, self.y, self.loss_fn = x, y, loss_fn

    def flat(self) -> torch.Tensor:
        """The current parameters as one vector."""
        params = dict(self.model.named_parameters())
        return torch.cat([params[name].detach().reshape(-1) for name in self.names])

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a flat vector back into named tensors."""
        pieces = torch.split(flat, self.sizes)
        return {
            name: piece.reshape(shape)
            for name, piece, shape in zip(self.names, pieces, self.shapes, strict=True)
        }

    def loss(self, flat: torch.Tensor) -> torch.Tensor:
        """Training loss at the parameters ``flat`` (the model itself is left unchanged)."""
        output = functional_call(self.model, (self.unflatten(flat), self.buffers), (self.x,))
        return self.loss_fn(output, self.y)

    def assign(self, flat: torch.Tensor) -> None:
        """Write ``flat`` into the model's parameters."""
        with torch.no_grad():
            params = dict(self.model.named_parameters())
            for name, value in self.unflatten(flat).items():
                params[name].copy_(value)


def filter_normalized_direction(model: nn.Module, generator: torch.Generator) -> torch.Tensor:
    """A random direction scaled filter by filter to the weights' norms (Li et al., 2018).

    Each output unit/filter of a weight tensor gets the norm of the same filter of the weights;
    biases and 1-D parameters (batch norm) get zero, as in the paper.
    """
    pieces = []
    for p in (p for p in model.parameters() if p.requires_grad):
        d = torch.randn(p.shape, generator=generator, dtype=p.dtype)
        if p.dim() <= 1:
            d.zero_()
        else:
            d_rows, p_rows = d.reshape(len(d), -1), p.detach().reshape(len(p), -1).cpu()
            d_rows *= p_rows.norm(dim=1, keepdim=True) / (d_rows.norm(dim=1, keepdim=True) + 1e-10)
        pieces.append(d.reshape(-1))
    return torch.cat(pieces)


def landscape(
    flat_model: FlatModel,
    directions: tuple[torch.Tensor, torch.Tensor],
    span: float,
    points_1d: int,
    points_2d: int,
) -> dict[str, np.ndarray]:
    """Loss along a 1-D slice (first direction) and on a 2-D plane through the current weights."""
    center = flat_model.flat()
    d1, d2 = (d.to(center) for d in directions)
    alphas = np.linspace(-span, span, points_1d)
    grid = np.linspace(-span, span, points_2d)
    with torch.no_grad():
        line = np.array([float(flat_model.loss(center + float(a) * d1)) for a in alphas])
        plane = np.array(
            [
                [float(flat_model.loss(center + float(a) * d1 + float(b) * d2)) for a in grid]
                for b in grid
            ]
        )
    return {"alphas": alphas, "line": line, "grid": grid, "plane": plane}


def plot_landscape(
    surface: dict[str, np.ndarray], title: str, path_1d: Path, path_2d: Path
) -> None:
    """Save the 1-D curve and the 2-D contour plot as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(surface["alphas"], surface["line"])
    ax.axvline(0.0, color="grey", linewidth=0.8)
    ax.set(xlabel="step along direction 1", ylabel="training loss", title=title)
    fig.tight_layout()
    fig.savefig(path_1d, dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 4.2))
    contour = ax.contourf(surface["grid"], surface["grid"], surface["plane"], levels=30)
    fig.colorbar(contour, ax=ax, label="training loss")
    ax.plot([0], [0], marker="x", color="white")
    ax.set(xlabel="direction 1", ylabel="direction 2", title=title)
    fig.tight_layout()
    fig.savefig(path_2d, dpi=100)
    plt.close(fig)


def _defaults() -> Any:
    from omegaconf import OmegaConf

    from mlcli.config.schemas.analysis import HessianSchema

    return OmegaConf.structured(HessianSchema)


_DEFAULT_HESSIAN = _defaults()


class Analyzer:
    """Runs the configured analyses at epoch ends of one fold; returns result rows.

    Built by the runner from ``cfg.analysis`` (``None`` when no analysis is configured).
    """

    def __init__(
        self,
        hessian: Any = None,
        landscape: Any = None,
        trajectory: Any = None,
        *,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        out_dir: Path,
        fold: int,
        seed: int,
    ) -> None:
        self.hessian = hessian
        self.landscape = landscape
        self.trajectory = trajectory
        self.path: list[torch.Tensor] = []
        self.loss_fn = loss_fn
        self.out_dir = out_dir
        self.fold = fold
        self.seed = seed
        self.findings: list[dict[str, Any]] = []

    @property
    def active(self) -> bool:
        """False for ``analysis=none``: the runner then skips the analyzer entirely."""
        return any(a is not None for a in (self.hessian, self.landscape, self.trajectory))

    def _flat_model(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> FlatModel:
        limit = int((self.hessian or self.landscape or self.trajectory).get("max_samples", 2048))
        return FlatModel(model, x[:limit], y[:limit], self.loss_fn)

    def _analyze(self, flat_model: FlatModel) -> CriticalPoint:
        h = self.hessian or _DEFAULT_HESSIAN
        return analyze(
            flat_model.loss,
            flat_model.flat(),
            grad_tol=float(h.grad_tol),
            eig_tol=float(h.eig_tol),
            exact_max_params=int(h.exact_max_params),
            k=int(h.k),
        )

    def before_training(self, model: nn.Module) -> list[tuple[int, str, str, float]]:
        """The trajectory's start (epoch 0 rows ``w0``, ``w1`` ...), when one is recorded."""
        return self._position(model, 0)

    def _position(self, model: nn.Module, epoch: int) -> list[tuple[int, str, str, float]]:
        if self.trajectory is None:
            return []
        flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double().cpu()
        if flat.numel() > int(self.trajectory.max_params):
            return []
        self.path.append(flat)
        return [(epoch, "train", f"w{i}", float(v)) for i, v in enumerate(flat.tolist())]

    def after_epoch(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: int, last: bool
    ) -> list[tuple[int, str, str, float]]:
        """Analyze (and maybe escape a saddle) after ``epoch``; the model is left in train mode."""
        position = self._position(model, epoch)
        if last and len(self.path) > 1 and self.path[0].numel() >= 2:
            model.eval()
            try:
                self._surface(self._flat_model(model, x, y))
            finally:
                model.train()
        return position + self._critical(model, x, y, epoch, last)

    def _surface(self, flat_model: FlatModel) -> None:
        """The training loss on a grid over the first two parameters around the path (the
        others at their final values): ``analysis/surface_fold{fold}.npz``."""
        options = self.trajectory
        path = torch.stack(self.path)[:, :2]
        low, high = path.min(0).values, path.max(0).values
        pad = (high - low).clamp(min=1e-3) * float(options.margin)
        axes = [torch.linspace(float(a), float(b), int(options.points)) for a, b in
                zip(low - pad, high + pad, strict=True)]  # fmt: skip
        final = flat_model.flat()
        loss = np.zeros((len(axes[1]), len(axes[0])))
        with torch.no_grad():
            for i, b in enumerate(axes[1]):
                for j, a in enumerate(axes[0]):
                    point = final.clone()
                    point[0], point[1] = a, b
                    loss[i, j] = float(flat_model.loss(point))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            self.out_dir / f"surface_fold{self.fold}.npz",
            w0=axes[0].numpy(),
            w1=axes[1].numpy(),
            loss=loss,
            path=torch.stack(self.path).numpy(),
        )

    def _critical(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: int, last: bool
    ) -> list[tuple[int, str, str, float]]:
        h = self.hessian
        every = int(h.get("every") or 0) if h else 0
        due = h is not None and (last or (every > 0 and epoch % every == 0))
        escape = h is not None and bool(h.get("escape"))
        if not (due or escape or (last and self.landscape)):
            return []
        rows: list[tuple[int, str, str, float]] = []
        model.eval()
        try:
            flat_model = self._flat_model(model, x, y)
            found = self._analyze(flat_model) if (due or escape) else None
            if found is not None and due:
                rows.extend(found.rows(epoch))
                self._record(epoch, found)
            if found is not None and escape and found.verdict == "saddle point" and not last:
                rows.extend(self._escape(flat_model, found, epoch))
            if last and self.landscape:
                self._landscape(flat_model, found)
            if last and self.findings:
                from mlcli.rundir import write_json

                write_json(self.out_dir / f"fold{self.fold}.json", {"findings": self.findings})
        finally:
            model.train()
        return rows

    def _record(self, epoch: int, found: CriticalPoint) -> None:
        self.findings.append(
            {
                "fold": self.fold,
                "epoch": epoch,
                "verdict": found.verdict,
                "reason": found.reason,
                "method": found.method,
                "grad_norm": found.grad_norm,
                "loss": found.loss,
                "min_eig": found.min_eig,
                "max_eig": found.max_eig,
                "min_ratio": found.min_ratio,
                "n_params": found.n_params,
            }
        )

    def _escape(
        self, flat_model: FlatModel, found: CriticalPoint, epoch: int
    ) -> list[tuple[int, str, str, float]]:
        """Step along the eigenvector of the most negative eigenvalue, in its descending sign."""
        assert found.min_eigvec is not None
        center = flat_model.flat()
        step = (
            float(self.hessian.escape_step) * found.min_eigvec.to(center) / found.min_eigvec.norm()
        )
        with torch.no_grad():
            candidates = [center + step, center - step]
            losses = [float(flat_model.loss(c)) for c in candidates]
        best = int(np.argmin(losses))
        flat_model.assign(candidates[best])
        return [
            (epoch, "train", "escape", 1.0),
            (epoch, "train", "escape_loss_before", found.loss),
            (epoch, "train", "escape_loss_after", losses[best]),
        ]

    def _landscape(self, flat_model: FlatModel, found: CriticalPoint | None) -> None:
        options = self.landscape
        generator = torch.Generator().manual_seed(self.seed)
        if options.directions == "hessian":
            found = found or self._analyze(flat_model)
            n = flat_model.flat().numel()
            if found.min_eigvec is None or n < 2:
                raise ValueError("landscape.directions=hessian needs a Hessian analysis")
            limit = int((self.hessian or _DEFAULT_HESSIAN).exact_max_params)
            top = top_eigenvector(flat_model.loss, flat_model.flat(), limit)
            directions = (top, found.min_eigvec)
            label = "top / bottom Hessian eigenvectors"
        else:
            directions = (
                filter_normalized_direction(flat_model.model, generator),
                filter_normalized_direction(flat_model.model, generator),
            )
            label = "random filter-normalized directions"
        surface = landscape(
            flat_model,
            directions,
            float(options.span),
            int(options.points_1d),
            int(options.points_2d),
        )
        self.out_dir.mkdir(parents=True, exist_ok=True)
        stem = self.out_dir / f"landscape_fold{self.fold}"
        np.savez_compressed(f"{stem}.npz", **surface)  # type: ignore[arg-type]
        plot_landscape(
            surface,
            f"fold {self.fold}: {label}",
            Path(f"{stem}_1d.png"),
            Path(f"{stem}_2d.png"),
        )


def loss_function(task: Task) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training objective of ``task`` as (output, target) -> scalar."""
    from mlcli.tasks.metrics import loss

    return lambda output, target: loss(task, output, target)
