"""What a config may build: the allowlist judges the object a ``_target_`` names, not its name.

A dotted name is resolved one step at a time, here, never by Hydra's ``_locate``, which walks
module attributes: under a prefix check, ``mlcli.data.tabular.np.load`` would be ``numpy.load``.
A target is admitted when the object it names belongs to an allowed namespace:

* **mlcli's builders**: exactly the names in :data:`BUILDERS` (``mlcli.models.mlp`` ...); the
  rest of mlcli (functions that write files, the CLI) is never built from a config;
* **torch.optim**: classes defined in ``torch.optim`` that subclass ``Optimizer``, and in
  ``torch.optim.lr_scheduler`` ``LRScheduler``/``ReduceLROnPlateau`` subclasses;
* **modules the user admits**: ``allow_targets=[mypkg]`` *on the command line*, or
  ``MLCLI_ALLOW_TARGETS=mypkg`` in the environment, admit the callables *defined* in that module
  namespace (``mypkg.Net``, ``mypkg.sub.make``; not ``mypkg.np.load``: ``mypkg.np`` is numpy).

Each step of a walk must be a public name (no ``_``); each module on the way must be the
submodule its path names (``module.__name__`` equals the path walked), and the final object's
defining module (``__module__``) must lie inside the namespace. A module is imported only when
its dotted name lies inside an allowed namespace (importing an attacker's module runs it).

Trust comes from the user, not from a folder: ``allow_targets`` read from a config file (a
``./conf`` shipped with someone's repository) admits nothing. The CLI checks that in its
preflight and hands the admitted entries to every job (whatever process runs it) in
:data:`ADMISSION_ENV`; without that variable (mlcli used as a library: ``runner.run(cfg)``), the
config's ``allow_targets`` are the caller's own.

A user's module in the working directory (``./mypkg.py``) is importable by its admitted name
only, whatever ``sys.path`` says (the ``mlcli`` console script does not put the working directory
on it, and putting it there would let a ``./numpy.py`` shadow numpy).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from mlcli.config import env

ADMISSION_ENV = env.ADMITTED_TARGETS
"""JSON set by ``mlcli train`` for its jobs: ``{"allow_targets": [...], "any": bool,
"code_dir": str}`` (the command line's entries; ``any`` with ``--trust-overrides``)."""

BUILDERS: dict[str, tuple[str, ...]] = {
    "mlcli.models": (
        "attention", "cnn", "cnn1d", "linear", "mlp", "relu_sum", "resnet", "sigmoid_sum",
        "transformer",
    ),
    "mlcli.data": (
        "breast_cancer", "csv", "curve", "diabetes", "digits", "hmm_tagging", "images", "iris",
        "japanese_vowels", "mnist1d", "npz", "pairs", "seq_reverse", "sunspots", "surface",
        "tagged", "text", "wine",
    ),
    "mlcli.data.augment": ("flip_crop", "none", "randaugment", "standard"),
    "mlcli.cv": ("group", "holdout", "kfold", "repeated", "stratified", "timeseries"),
    "mlcli.schedules": ("constant", "cosine", "exponential", "inverse_sqrt", "linear", "step"),
    "mlcli.analysis": ("Analyzer",),
}  # fmt: skip
"""mlcli's builders, by package: the only callables of mlcli a config may name."""

BUILDER_TARGETS: frozenset[str] = frozenset(
    f"{package}.{name}" for package, names in BUILDERS.items() for name in names
)

TORCH_NAMESPACE = "torch.optim"
TORCH_CLASSES: frozenset[str] = frozenset(
    [
        *(f"torch.optim.{name}" for name in (
            "ASGD", "Adadelta", "Adafactor", "Adagrad", "Adam", "AdamW", "Adamax", "LBFGS",
            "NAdam", "RAdam", "RMSprop", "Rprop", "SGD", "SparseAdam",
        )),
        *(f"torch.optim.lr_scheduler.{name}" for name in (
            "ChainedScheduler", "ConstantLR", "CosineAnnealingLR", "CosineAnnealingWarmRestarts",
            "CyclicLR", "ExponentialLR", "LambdaLR", "LinearLR", "MultiStepLR", "MultiplicativeLR",
            "OneCycleLR", "PolynomialLR", "ReduceLROnPlateau", "SequentialLR", "StepLR",
        )),
    ]
)  # fmt: skip
"""torch.optim's optimizers and schedulers by name. The preflight admits these names without
importing torch (~1.4 s); every build resolves the object and checks its class. Other
``torch.optim`` names are judged by the object in the preflight too."""

BUILTIN_REASON = "built-in allowlist (mlcli)"
TORCH_REASON = "built-in allowlist (torch.optim)"


class TargetNotAllowedError(ValueError):
    """A ``_target_`` whose object is outside the allowlist."""

    def __init__(self, key: str, target: str, why: str, module: str | None = None) -> None:
        hint = ""
        if module:
            hint = (
                f" If you trust {module}, admit it on the command line: "
                f"`allow_targets=[{module}]` (or {env.ALLOW_TARGETS}={module})."
            )
        super().__init__(
            f"{target!r} is not on the allowlist of what configs may build: {why}.{hint}"
        )
        self.key = key
        self.target = target


class TargetUnavailableError(ValueError):
    """An admitted ``_target_`` that cannot be imported (or has no such callable)."""

    def __init__(self, key: str, target: str, why: str) -> None:
        super().__init__(f"{target!r} cannot be built: {why}")
        self.key = key
        self.target = target


@dataclass(frozen=True)
class Admitted:
    """A target the allowlist admits: why, and the object to call (None: checked by name only)."""

    target: str
    reason: str
    obj: Any = None


# --------------------------------------------------------------------------------------------------
# Which user namespaces are admitted.


def _under(name: str, namespace: str) -> bool:
    return name == namespace or name.startswith(namespace + ".")


def _public_path(name: str) -> bool:
    return bool(name) and all(p.isidentifier() and not p.startswith("_") for p in name.split("."))


def entry_problem(entry: str) -> str | None:
    """Why an ``allow_targets`` entry can admit nothing, or None when it is a module name."""
    if not _public_path(entry):
        return f"{entry!r} is not a module name (dotted identifiers, none starting with _)"
    if _under(entry, "mlcli") or _under(entry, "hydra_plugins"):
        return (
            f"{entry!r} is mlcli's own code: its builders are allowed already, "
            "and nothing else of it is ever built from a config"
        )
    return None


def env_entries() -> list[str]:
    """The modules named in ``MLCLI_ALLOW_TARGETS`` (comma-separated)."""
    return [e.strip() for e in os.environ.get(env.ALLOW_TARGETS, "").split(",") if e.strip()]


@dataclass(frozen=True)
class Admission:
    """What ``mlcli train`` admitted for its jobs (read from :data:`ADMISSION_ENV`)."""

    allow_targets: tuple[str, ...] = ()
    any: bool = False
    code_dir: str | None = None

    def to_env(self) -> str:
        """The value of :data:`ADMISSION_ENV` for this admission."""
        return json.dumps(
            {"allow_targets": list(self.allow_targets), "any": self.any, "code_dir": self.code_dir}
        )


def current_admission() -> Admission | None:
    """The admission of the ``mlcli train`` command this process works for, or None (library
    use). A malformed value admits nothing."""
    text = os.environ.get(ADMISSION_ENV)
    if text is None:
        return None
    try:
        data = json.loads(text)
        return Admission(
            allow_targets=tuple(str(e) for e in data.get("allow_targets") or ()),
            any=data.get("any") is True,
            code_dir=str(data["code_dir"]) if data.get("code_dir") else None,
        )
    except (ValueError, TypeError, AttributeError):
        return Admission()


def config_entries(allow_targets: Iterable[Any] = ()) -> list[str]:
    """The entries of a config's ``allow_targets`` that count: under ``mlcli train``, only those
    its command line gave (all of them with ``--trust-overrides``)."""
    entries = [str(e) for e in allow_targets or ()]
    admission = current_admission()
    if admission is None or admission.any:
        return entries
    return [e for e in entries if e in admission.allow_targets]


def user_namespaces(
    allow_targets: Iterable[Any] = (), entries_checked: bool = False
) -> list[tuple[str, str]]:
    """``(namespace, reason)`` of every module the user admitted, in order of precedence
    (``entries_checked``: ``allow_targets`` holds only entries the caller admitted already)."""
    entries = [str(e) for e in allow_targets] if entries_checked else config_entries(allow_targets)
    found = [(e, f"allow_targets ({e})") for e in entries]
    found += [(e, f"{env.ALLOW_TARGETS} ({e})") for e in env_entries()]
    return [(ns, reason) for ns, reason in found if entry_problem(ns) is None]


def described(namespaces: list[tuple[str, str]]) -> str:
    """The allowlist in words, for error messages."""
    extra = [ns for ns, _ in namespaces]
    text = "mlcli's builders, torch.optim's optimizers and schedulers"
    return text + (f", and what {', '.join(extra)} define" if extra else "")


# --------------------------------------------------------------------------------------------------
# The user's own modules in the working directory.


class _UserCodeFinder(importlib.abc.MetaPathFinder):
    """Finds the admitted top-level modules (and only those) in the user's code dir."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        """Called by the import system after the usual finders found nothing."""
        if fullname not in self.names:
            return None
        admission = current_admission()
        code_dir = (admission.code_dir if admission else None) or os.getcwd()
        return importlib.machinery.PathFinder.find_spec(fullname, [code_dir])


_FINDER = _UserCodeFinder()


def _importable_from_code_dir(namespace: str) -> None:
    _FINDER.names.add(namespace.split(".", 1)[0])
    if _FINDER not in sys.meta_path:
        sys.meta_path.append(_FINDER)  # last: an installed module of that name wins


# --------------------------------------------------------------------------------------------------
# Resolution.


class _Refused(Exception):
    """Why a walk left the namespace (internal)."""


def _import(key: str, target: str, name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name is not None and _under(name, error.name):
            where = os.getcwd()
            raise TargetUnavailableError(
                key,
                target,
                f"no module {error.name!r} (neither installed nor {error.name}.py or "
                f"{error.name}/ in {where})",
            ) from error
        raise TargetUnavailableError(
            key, target, f"importing {name} failed: {type(error).__name__}: {error}"
        ) from error
    except Exception as error:  # the user's module raised while it was imported
        raise TargetUnavailableError(
            key, target, f"importing {name} failed: {type(error).__name__}: {error}"
        ) from error


def _walk(key: str, target: str, namespace: str) -> Any:
    """The object ``target`` names, reached from ``namespace`` step by step, never leaving it."""
    obj: Any = _import(key, target, namespace)
    path = namespace
    for part in target[len(namespace) + 1 :].split("."):
        path = f"{path}.{part}"
        if isinstance(obj, ModuleType):
            child = vars(obj).get(part)  # no module __getattr__ hooks
            if child is None:
                try:
                    child = importlib.import_module(path)  # a submodule: inside the namespace
                except ModuleNotFoundError as error:
                    if error.name != path:
                        raise TargetUnavailableError(
                            key, target, f"importing {path} failed: {error}"
                        ) from error
                    raise TargetUnavailableError(
                        key, target, f"{obj.__name__} has no {part!r}"
                    ) from None
                except Exception as error:
                    raise TargetUnavailableError(
                        key, target, f"importing {path} failed: {type(error).__name__}: {error}"
                    ) from error
        else:
            try:
                child = getattr(obj, part)
            except AttributeError:
                raise TargetUnavailableError(key, target, f"{path} does not exist") from None
        if isinstance(child, ModuleType) and child.__name__ != path:
            raise _Refused(f"{path} is the module {child.__name__}, outside {namespace}")
        obj = child
    if isinstance(obj, ModuleType) or not callable(obj):
        raise _Refused(f"{target} is not a callable")
    module = getattr(obj, "__module__", None)
    if not isinstance(module, str) or not _under(module, namespace):
        raise _Refused(f"{target} is {_describe(obj)}, defined in {module}, outside {namespace}")
    return obj


def _describe(obj: Any) -> str:
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{getattr(obj, '__module__', '?')}.{name}"


def _builder(key: str, target: str) -> Any:
    package, _, name = target.rpartition(".")
    obj = vars(_import(key, target, package)).get(name)
    module = getattr(obj, "__module__", None)
    if not callable(obj) or not isinstance(module, str) or not _under(module, package):
        raise TargetUnavailableError(key, target, f"{package} has no builder {name!r}")
    return obj


def _torch_class(key: str, target: str) -> Any:
    obj = _walk(key, target, TORCH_NAMESPACE)
    from torch.optim import Optimizer
    from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

    if not (isinstance(obj, type) and issubclass(obj, (Optimizer, LRScheduler, ReduceLROnPlateau))):
        raise _Refused(
            f"{target} is not an optimizer or learning-rate scheduler class "
            "(torch.optim admits only Optimizer, LRScheduler and ReduceLROnPlateau subclasses)"
        )
    return obj


def _package_of(target: str) -> str | None:
    return next((p for p in BUILDERS if _under(target, p)), None)


def admit(
    key: str,
    target: Any,
    allow_targets: Iterable[Any] = (),
    resolve: bool = True,
    entries_checked: bool = False,
) -> Admitted:
    """Judge ``target`` (the ``_target_`` at ``key``): the :class:`Admitted` object to call, or
    :class:`TargetNotAllowedError` / :class:`TargetUnavailableError`.

    ``allow_targets`` is a config's list (only its admitted entries count, see
    :func:`config_entries`; ``entries_checked``: all of them, the caller checked them).
    ``resolve=False`` (the preflight) admits mlcli's builders and torch.optim's known classes by
    their exact name without importing them; everything else is resolved and judged as always.
    """
    name = str(target)
    suggestion = name.rsplit(".", 1)[0] if "." in name else name
    if not _public_path(name):
        raise TargetNotAllowedError(
            key, name, "a target is a dotted name of public identifiers (none starting with _)"
        )
    if name in BUILDER_TARGETS:
        return Admitted(name, BUILTIN_REASON, _builder(key, name) if resolve else None)
    if _under(name, "mlcli") or _under(name, "hydra_plugins"):
        package = _package_of(name)
        listed = f"{package} builds only {', '.join(BUILDERS[package])}" if package else ""
        raise TargetNotAllowedError(
            key, name, "it is not one of mlcli's builders" + (f" ({listed})" if listed else "")
        )
    refusals: list[str] = []
    if _under(name, TORCH_NAMESPACE):
        if name in TORCH_CLASSES and not resolve:
            return Admitted(name, TORCH_REASON)
        try:
            return Admitted(name, TORCH_REASON, _torch_class(key, name))
        except _Refused as refused:
            refusals.append(str(refused))
    namespaces = user_namespaces(allow_targets, entries_checked)
    for namespace, reason in namespaces:
        if not _under(name, namespace) or name == namespace:
            continue
        _importable_from_code_dir(namespace)
        try:
            return Admitted(name, reason, _walk(key, name, namespace))
        except _Refused as refused:
            refusals.append(str(refused))
    if refusals:
        raise TargetNotAllowedError(key, name, "; ".join(refusals))
    return_module = None if _under(name, TORCH_NAMESPACE) else suggestion
    raise TargetNotAllowedError(
        key, name, f"configs may build {described(namespaces)}", return_module
    )
