"""Input you cannot trust: every attack is refused before anything runs or is written."""

from __future__ import annotations

import ast
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import TINY

MLCLI_SOURCE = Path(__file__).parents[1] / "mlcli"


class _Payload:
    """Unpickling this creates the sentinel file."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.sentinel,))


@pytest.fixture
def trap(tmp_path: Path) -> dict[str, Path]:
    """A sentinel that must never appear, a victim that must not change, and poisoned files."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    sentinel = tmp_path / "SENTINEL"
    pickled = tmp_path / "evil.pkl"
    pickled.write_bytes(pickle.dumps(_Payload(sentinel)))
    npy = tmp_path / "evil.npy"
    np.save(npy, np.array([_Payload(sentinel)], dtype=object), allow_pickle=True)
    return {"victim": victim, "sentinel": sentinel, "pickled": pickled, "npy": npy}


def _attacks(t: dict[str, Path]) -> dict[str, str]:
    """A model option per attack: what a config copied from the internet could say."""
    v, s = t["victim"], t["sentinel"]
    return {
        "os.system": f"_target_: os.system\ncommand: touch {s}\n",
        "builtins.exec": f'_target_: builtins.exec\n_args_: [\'open(r"{s}", "w")\']\n',
        "subprocess.run": f"_target_: subprocess.run\nargs: [touch, '{s}']\n",
        "pandas.read_pickle": (
            f"_target_: pandas.read_pickle\nfilepath_or_buffer: '{t['pickled']}'\n"
        ),
        "numpy.load": f"_target_: numpy.load\nfile: '{t['npy']}'\nallow_pickle: true\n",
        "joblib.load": f"_target_: joblib.load\nfilename: '{t['pickled']}'\n",
        "builtins.open": f"_target_: builtins.open\nfile: '{v}'\nmode: w\n",
        "shutil.copyfile": f"_target_: shutil.copyfile\nsrc: '{t['pickled']}'\ndst: '{v}'\n",
        "os.symlink": f"_target_: os.symlink\nsrc: '{t['pickled']}'\ndst: '{s}'\n",
        # nested inside an allowed builder: Hydra instantiates nested nodes first
        "nested": (
            f"_target_: mlcli.models.mlp\nhidden:\n  _target_: os.system\n  command: touch {s}\n"
        ),
    }


ATTACK_NAMES = list(_attacks({k: Path(k) for k in ("victim", "sentinel", "pickled", "npy")}))


@pytest.mark.parametrize("attack", ATTACK_NAMES)
def test_target_outside_the_allowlist_is_refused(cli, tmp_path, trap, attack):
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "evil.yaml").write_text(_attacks(trap)[attack])
    result = cli("train", "model=evil", *TINY)
    assert result.exit_code == 2, result.output
    assert "allowlist" in result.output and "Traceback" not in result.output
    assert not trap["sentinel"].exists()
    assert trap["victim"].read_text() == "precious"
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    "target", ["os.system", "builtins.exec", "subprocess.run", "mlcli.cli.main"]
)
def test_target_from_the_command_line_is_refused(cli, tmp_path, target):
    result = cli("train", f"model._target_={target}", *TINY)
    assert result.exit_code == 2
    assert "model._target_" in result.output and "allowlist" in result.output
    assert not (tmp_path / "outputs").exists()


def test_dangerous_hydra_overrides_are_refused(cli, tmp_path, trap):
    logging_dir = tmp_path / "conf" / "hydra" / "job_logging"
    logging_dir.mkdir(parents=True)
    (logging_dir / "evil.yaml").write_text(
        "version: 1\nhandlers:\n  f:\n    class: logging.FileHandler\n"
        f"    filename: {trap['victim']}\n    mode: w\nroot:\n  handlers: [f]\n"
    )
    attacks = [
        ["+hydra.job.env_set.TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1"],
        [f"hydra.searchpath=[file://{tmp_path}]"],
        ["hydra/job_logging=evil"],
        [
            "+hydra.callbacks.pwn._target_=os.system",
            f"+hydra.callbacks.pwn.command=touch {trap['sentinel']}",
        ],
    ]  # fmt: skip
    for args in attacks:
        result = cli("train", *args, *TINY)
        assert result.exit_code == 2, (args, result.output)
        assert "--trust-overrides" in " ".join(result.output.split()), args
    assert not trap["sentinel"].exists()
    assert trap["victim"].read_text() == "precious"
    assert not (tmp_path / "outputs").exists()


def test_shared_config_file_with_callbacks_is_refused_too(cli, tmp_path, trap):
    """A primary config in ./conf that sets hydra.callbacks is caught in the composed config."""
    conf = tmp_path / "conf"
    conf.mkdir()
    packaged = (Path(__file__).parents[1] / "conf" / "config.yaml").read_text()
    (conf / "config.yaml").write_text(
        packaged.replace(
            "hydra:\n",
            f"hydra:\n  callbacks:\n    pwn:\n      _target_: os.system\n"
            f"      command: touch {trap['sentinel']}\n",
        )
    )
    result = cli("train", *TINY)
    assert result.exit_code == 2 and "hydra.callbacks" in result.output
    assert not trap["sentinel"].exists()


def test_trusted_override_runs_and_is_recorded(cli, tmp_path):
    result = cli("train", "--trust-overrides", "+hydra.job.env_set.MLCLI_TEST_FLAG=1", *TINY)
    assert result.exit_code == 0, result.output
    (status_file,) = (tmp_path / "outputs").rglob("status.json")
    status = json.loads(status_file.read_text())
    assert status["trust_overrides"] is True
    assert status["allowed_targets"]["model"] == {
        "target": "mlcli.models.mlp",
        "reason": "built-in allowlist (mlcli)",
    }


def test_allow_targets_reason_is_recorded(cli, tmp_path, monkeypatch):
    (tmp_path / "mynets.py").write_text(
        "from mlcli.models import linear\n\ndef Net(in_shape, out_features):\n"
        "    return linear(in_shape, out_features)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MLCLI_ALLOW_TARGETS", "mynets")
    assert cli("train", "model=linear", "model._target_=mynets.Net", *TINY).exit_code == 0
    (status_file,) = (tmp_path / "outputs").rglob("status.json")
    reason = json.loads(status_file.read_text())["allowed_targets"]["model"]["reason"]
    assert reason == "MLCLI_ALLOW_TARGETS (mynets)"


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


def _name(call: ast.Call) -> str:
    return ast.unparse(call.func)


def test_source_has_no_unsafe_loading_or_eval():
    """No torch.load without weights_only=True, no yaml.load without a safe loader, no eval/exec."""
    checked = 0
    for path in sorted(MLCLI_SOURCE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for call in _calls(tree):
            name = _name(call)
            where = f"{path.relative_to(MLCLI_SOURCE.parent)}:{call.lineno}"
            if name.endswith("torch.load"):
                keywords = {k.arg: k.value for k in call.keywords}
                value = keywords.get("weights_only")
                assert isinstance(value, ast.Constant) and value.value is True, where
            if name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"):
                loader = {k.arg: ast.unparse(k.value) for k in call.keywords}.get("Loader", "")
                assert "safe" in loader.lower(), where
            assert name not in ("eval", "exec", "builtins.eval", "builtins.exec"), where
            checked += 1
    assert checked > 100  # the walk really looked at the code


def test_crafted_checkpoint_never_runs_its_payload(cli, tmp_path, trap, monkeypatch):
    """Three attempts: a direct load, with the environment switch, and through the CLI resuming a
    run with `hydra.job.env_set.TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1` (trusted)."""
    import torch

    from mlcli.engine import checkpoint

    evil = tmp_path / "evil.pt"
    torch.save({"epoch": 1, "x": _Payload(trap["sentinel"])}, evil)
    with pytest.raises(checkpoint.CheckpointRefusedError):
        checkpoint.load(evil)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(checkpoint.CheckpointRefusedError):
        checkpoint.load(evil)
    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")

    args = ["checkpoint_every=1", "stack_folds=off", "model=linear", "dataset=wine", *TINY]
    assert cli("train", *args).exit_code == 0
    (status_file,) = (tmp_path / "outputs").rglob("status.json")
    run_dir = status_file.parent
    # Make the run look interrupted in fold 0, with the crafted file as fold 0's checkpoint.
    status = json.loads(status_file.read_text())
    status.update(state="INTERRUPTED", folds_completed=[])
    status_file.write_text(json.dumps(status))
    checkpoint.fold_path(run_dir, 0).parent.mkdir(exist_ok=True)
    checkpoint.fold_path(run_dir, 0).write_bytes(evil.read_bytes())
    result = cli(
        "train", "--trust-overrides", "+hydra.job.env_set.TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1", *args
    )
    assert result.exit_code == 1
    assert "refuses it" in " ".join(result.output.split())
    assert not trap["sentinel"].exists()


# --------------------------------------------------------------------------------------------------
# The allowlist judges objects, not names: targets reached through a module attribute.

PACKAGED_CONFIG = (Path(__file__).parents[1] / "conf" / "config.yaml").read_text()


def _ship(root: Path, group: str, name: str, text: str) -> None:
    """A config option in a ./conf folder, as someone else's repository would ship it."""
    (root / "conf" / group).mkdir(parents=True, exist_ok=True)
    (root / "conf" / group / f"{name}.yaml").write_text(text)


def _ship_config(root: Path, hydra: dict | None = None, top: dict | None = None) -> None:
    """A ./conf/config.yaml: mlcli's own with ``hydra`` settings and top-level keys added."""
    import yaml

    def merged(base: dict, extra: dict) -> dict:
        out = dict(base)
        for key, value in extra.items():
            both = isinstance(value, dict) and isinstance(base.get(key), dict)
            out[key] = merged(base[key], value) if both else value
        return out

    config = merged(yaml.safe_load(PACKAGED_CONFIG), {**(top or {}), "hydra": hydra or {}})
    (root / "conf").mkdir(exist_ok=True)
    (root / "conf" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def _hop_attacks(t: dict[str, Path]) -> dict[str, tuple[str, str]]:
    """(group, option text): a target under an allowed prefix that walks to another module's
    function, with the arguments that make it harmful."""
    import torch

    evil_pt = t["npy"].with_name("evil.pt")
    torch.save({"x": _Payload(t["sentinel"])}, evil_pt)
    s, v = t["sentinel"], t["victim"]
    return {
        "mlcli.runner.subprocess.run": (
            "dataset",
            f"_target_: mlcli.runner.subprocess.run\nargs: [touch, '{s}']\n",
        ),
        "mlcli.data.tabular.np.load": (
            "dataset",
            f"_target_: mlcli.data.tabular.np.load\nfile: '{t['npy']}'\nallow_pickle: true\n",
        ),
        "mlcli.cv.np.load": (
            "cv",
            f"_target_: mlcli.cv.np.load\nfile: '{t['npy']}'\nallow_pickle: true\n",
        ),
        "torch.optim.sgd.torch.load": (
            "dataset",
            f"_target_: torch.optim.sgd.torch.load\nf: '{evil_pt}'\nweights_only: false\n",
        ),
        "torch.optim.lr_scheduler.warnings.warn": (
            "dataset",
            "_target_: torch.optim.lr_scheduler.warnings.warn\nmessage: pwned\n",
        ),
        "mlcli.runner.results.atomic_write_text": (
            "dataset",
            f"_target_: mlcli.runner.results.atomic_write_text\npath: '{v}'\ntext: x\n",
        ),
        "mlcli.sweep.write_json": (
            "dataset",
            f"_target_: mlcli.sweep.write_json\npath: '{v}'\npayload: {{a: 1}}\n",
        ),
        "mlcli.checkpoint.save": (
            "dataset",
            f"_target_: mlcli.checkpoint.save\npath: '{v}'\npayload: {{a: 1}}\n",
        ),
        "mlcli.report.command.run_report": (
            "dataset",
            f"_target_: mlcli.report.command.run_report\nroots: ['{t['victim'].parent}']\n"
            f"out: '{v}'\nfmt: csv\n",
        ),
        "nested in a builder": (
            "model",
            "_target_: mlcli.models.mlp\nhidden:\n  _target_: mlcli.runner.subprocess.run\n"
            f"  args: [touch, '{s}']\n",
        ),
    }


HOP_ATTACKS = [
    "mlcli.runner.subprocess.run",
    "mlcli.data.tabular.np.load",
    "mlcli.cv.np.load",
    "torch.optim.sgd.torch.load",
    "torch.optim.lr_scheduler.warnings.warn",
    "mlcli.runner.results.atomic_write_text",
    "mlcli.sweep.write_json",
    "mlcli.checkpoint.save",
    "mlcli.report.command.run_report",
    "nested in a builder",
]


def _assert_refused(result, trap: dict[str, Path], root: Path, *words: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    text = " ".join(result.output.split())
    for word in words:
        assert word in text, (word, result.output)
    assert not trap["sentinel"].exists()
    assert trap["victim"].read_text() == "precious"
    assert not (root / "outputs").exists()


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
@pytest.mark.parametrize("attack", HOP_ATTACKS)
def test_a_shipped_target_that_walks_out_of_an_allowed_module_is_refused(
    cli, tmp_path, trap, attack, dry_run
):
    group, text = _hop_attacks(trap)[attack]
    _ship(tmp_path, group, "evil", text)
    args = [f"{group}=evil", *_tiny(group), *(["--dry-run"] if dry_run else [])]
    _assert_refused(cli("train", *args), trap, tmp_path, "allowlist")


def _tiny(group: str) -> list[str]:
    """TINY, but for a cv option of the attacker's (which has no n_splits)."""
    return [a for a in TINY if not (group == "cv" and a.startswith("cv."))]


@pytest.mark.parametrize("multirun", [False, True], ids=["run", "multirun"])
@pytest.mark.parametrize(
    "override",
    [
        "model._target_=mlcli.runner.subprocess.run",
        "model._target_=mlcli.models.basic.nn.Linear",
        "model._target_=mlcli.models.conv.torch.load",
        "optim._target_=torch.optim.sgd.torch.load",
        "optim._target_=torch.optim.lr_scheduler.partial",
        "scheduler._target_=mlcli.schedules.LambdaLR",
        "scheduler._target_=torch.optim.lr_scheduler.warnings.warn",
        "cv._target_=mlcli.cv.np.load",
        "dataset._target_=mlcli.data.tabular.np.load",
        "analysis._target_=mlcli.analysis.plot_landscape",
    ],
)
def test_a_command_line_target_that_walks_out_of_an_allowed_module_is_refused(
    cli, tmp_path, trap, override, multirun
):
    args = [override, *TINY, *(["-m", "seed=0,1"] if multirun else [])]
    _assert_refused(cli("train", *args), trap, tmp_path, override.split("=")[0], "allowlist")


@pytest.fixture
def no_hydra_blocklist(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hydra's own target policy (hydra-core 1.3.8's blocklist) switched off: mlcli's check
    must stand alone (hydra-core 1.3.2, which pyproject.toml accepts, has none)."""
    import importlib

    permissive = {
        "_authorize_target_name": lambda *a, **k: None,
        "_authorize_resolved_target_identity": lambda target, name, *a, **k: name,
        "_authorize_target_invocation": lambda t, args, kwargs, *a, **k: (t, args, kwargs),
        "_authorize_discovery_path": lambda *a, **k: None,
        "_mediate_target_result": lambda result, *a, **k: result,
    }
    for name in ("instantiate._instantiate2", "target_policy", "logging_config"):
        try:
            module = importlib.import_module(f"hydra._internal.{name}")
        except ImportError:  # an older Hydra without that module
            continue
        for attribute, function in permissive.items():
            if hasattr(module, attribute):
                monkeypatch.setattr(module, attribute, function)


def test_without_hydras_blocklist_hydra_alone_would_run_the_payload(no_hydra_blocklist, trap):
    """The switch works: Hydra itself now calls what it is given."""
    from hydra.utils import instantiate

    instantiate({"_target_": "subprocess.run", "args": ["touch", str(trap["sentinel"])]})
    assert trap["sentinel"].exists()


@pytest.mark.parametrize("attack", [*ATTACK_NAMES, *HOP_ATTACKS])
def test_attacks_are_refused_without_hydras_blocklist(
    cli, tmp_path, trap, no_hydra_blocklist, attack
):
    if attack in ATTACK_NAMES:
        group, text = "model", _attacks(trap)[attack]
    else:
        group, text = _hop_attacks(trap)[attack]
    _ship(tmp_path, group, "evil", text)
    _assert_refused(cli("train", f"{group}=evil", *_tiny(group)), trap, tmp_path, "allowlist")


def test_the_object_checked_is_the_object_called(no_hydra_blocklist, monkeypatch):
    """Hydra is handed the admitted objects, never a name to resolve again with ``_locate``
    (which walks module attributes, as the attacks above do)."""
    from hydra._internal.instantiate import _instantiate2
    from omegaconf import OmegaConf

    from mlcli.config import targets as build

    def no_locate(path: str) -> None:
        raise AssertionError(f"Hydra resolved {path!r} itself")

    monkeypatch.setattr(_instantiate2, "_locate", no_locate)
    node = OmegaConf.create({"_target_": "mlcli.cv.kfold", "n_splits": 3})
    assert build.instantiate(node, "cv").get_n_splits() == 3
    assert build.factory(node, "cv")().get_n_splits() == 3


# --------------------------------------------------------------------------------------------------
# Trust comes from the user, not from the folder.


def test_allow_targets_from_a_shipped_config_admits_nothing(cli, tmp_path, trap):
    _ship_config(tmp_path, top={"allow_targets": ["numpy"]})
    _ship(
        tmp_path,
        "dataset",
        "evil",
        f"_target_: numpy.load\nfile: '{trap['npy']}'\nallow_pickle: true\n",
    )
    for extra in ([], ["--dry-run"], ["-m", "seed=0,1"]):
        result = cli("train", "dataset=evil", *TINY, *extra)
        _assert_refused(
            result, trap, tmp_path, "allow_targets=[numpy]", "MLCLI_ALLOW_TARGETS=numpy"
        )


def test_allow_targets_from_an_option_file_admits_nothing(cli, tmp_path, trap):
    """A group option can set top-level keys too (``# @package _global_``)."""
    _ship(
        tmp_path,
        "model",
        "evil",
        "# @package _global_\nallow_targets: [numpy]\nmodel:\n  _target_: numpy.load\n"
        f"  file: '{trap['npy']}'\n  allow_pickle: true\n",
    )
    _assert_refused(cli("train", "model=evil", *TINY), trap, tmp_path, "allow_targets=[numpy]")


MY_MODELS = (
    "import math\nfrom torch import nn\n\n"
    "def TinyNet(in_shape, out_features, width=8):\n"
    "    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), width),\n"
    "                         nn.ReLU(), nn.Linear(width, out_features))\n"
)


def test_the_user_admits_what_a_shipped_config_asks_for(cli, tmp_path, monkeypatch):
    (tmp_path / "shipped_models.py").write_text(MY_MODELS)
    _ship_config(tmp_path, top={"allow_targets": ["shipped_models"]})
    _ship(tmp_path, "model", "tiny", "_target_: shipped_models.TinyNet\nwidth: 4\n")
    monkeypatch.delitem(sys.modules, "shipped_models", raising=False)
    refused = cli("train", "model=tiny", "dataset=wine", *TINY)
    assert refused.exit_code == 2 and not (tmp_path / "outputs").exists()
    assert "allow_targets=[shipped_models]" in " ".join(refused.output.split())
    assert (
        cli(
            "train", "model=tiny", "dataset=wine", "allow_targets=[shipped_models]", *TINY
        ).exit_code
        == 0
    )
    monkeypatch.setenv("MLCLI_ALLOW_TARGETS", "shipped_models")
    assert cli("train", "model=tiny", "dataset=wine", "seed=1", *TINY).exit_code == 0
    reasons = [
        json.loads(p.read_text())["allowed_targets"]["model"]["reason"]
        for p in sorted((tmp_path / "outputs").rglob("status.json"))
    ]
    assert sorted(reasons) == [
        "MLCLI_ALLOW_TARGETS (shipped_models)",
        "allow_targets (shipped_models)",
    ]


def test_a_job_admits_only_what_its_command_line_admitted(trap, monkeypatch):
    """Jobs (whatever process or launcher runs them) get the command's admission: a config they
    compose themselves (an Optuna trial, a joblib worker) cannot admit more."""
    from omegaconf import OmegaConf

    from mlcli.config import allowlist
    from mlcli.config import targets as build

    node = OmegaConf.create(
        {"_target_": "subprocess.run", "args": ["touch", str(trap["sentinel"])]}
    )
    monkeypatch.setenv(allowlist.ADMISSION_ENV, allowlist.Admission(("json",)).to_env())
    with pytest.raises(build.TargetNotAllowedError, match="allowlist"):
        build.instantiate(node, "dataset", ["subprocess"])
    assert not trap["sentinel"].exists()
    assert build.check_target("x", "json.dumps", ["json"]) == "allow_targets (json)"


def test_resume_does_not_take_admissions_from_the_sweep_dirs_record(cli, tmp_path, trap):
    """``--resume DIR`` replays the command a sweep dir recorded: a file, not the user."""
    from mlcli import sweeps as sweep
    from mlcli.sweeps import preflight

    _ship(
        tmp_path,
        "dataset",
        "evil",
        f"_target_: numpy.load\nfile: '{trap['npy']}'\nallow_pickle: true\n",
    )
    args = ["-m", "seed=0,1", "allow_targets=[numpy]", "dataset=evil", *TINY]
    command, _ = preflight.check(args)  # the attacker computes the sweep's key the same way
    key = sweep.sweep_key([sweep.run_key(cfg) for _, cfg in command.jobs])
    sweep_dir = tmp_path / "outputs" / "sweeps" / "shared"
    sweep_dir.mkdir(parents=True)
    (sweep_dir / "sweep.json").write_text(
        json.dumps({"sweep_key": key, "created": "2026-12-01T00:00:00", "args": args, "jobs": []})
    )
    result = cli("train", "--resume", str(sweep_dir))
    assert result.exit_code == 2, result.output
    assert "allow_targets=[numpy]" in " ".join(result.output.split())
    assert not trap["sentinel"].exists()
    assert sorted(p.name for p in sweep_dir.iterdir()) == ["sweep.json"]


def test_the_optuna_sweeper_checks_its_jobs_like_any_other(cli, tmp_path, trap):
    _ship_config(tmp_path, top={"allow_targets": ["numpy"]})
    _ship(
        tmp_path,
        "cv",
        "evil",
        f"_target_: mlcli.cv.np.load\nfile: '{trap['npy']}'\nallow_pickle: true\n",
    )
    args = ["-m", "hydra/sweeper=mlcli_optuna", "optim.lr=tag(log,interval(1e-3,1e-1))",
            *_tiny("cv")]  # fmt: skip
    for extra in (["cv=evil"], ["cv=evil", "--dry-run"], []):
        result = cli("train", *args, *extra)
        assert result.exit_code == 2, result.output
        assert not trap["sentinel"].exists() and not (tmp_path / "outputs").exists()


# --------------------------------------------------------------------------------------------------
# A user's own model in the working directory; unimportable targets fail in the preflight.


def test_a_model_in_the_working_directory_is_importable_by_the_console_script(tmp_path):
    """The README's example, with the real `mlcli` command (whose sys.path lacks the cwd)."""
    (tmp_path / "mypkg.py").write_text(MY_MODELS)
    _ship(tmp_path, "model", "tiny", "_target_: mypkg.TinyNet\nwidth: 8\n")
    mlcli = Path(sys.executable).with_name("mlcli")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLCLI_ALLOW_TARGETS")}
    command = [str(mlcli), "train", "model=tiny", "allow_targets=[mypkg]", "dataset=wine", *TINY]
    done = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (status,) = (tmp_path / "outputs").rglob("status.json")
    assert json.loads(status.read_text())["state"] == "COMPLETED"


@pytest.mark.parametrize(
    ("module", "needle"),
    [
        (None, "no module 'nosuchmod'"),
        ("raise RuntimeError('broken on import')\n", "RuntimeError: broken on import"),
        ("x = 1\n", "nosuchmod has no 'Net'"),
    ],
    ids=["missing", "raises", "no-such-callable"],
)
def test_an_unimportable_target_is_found_in_the_preflight(
    cli, tmp_path, monkeypatch, module, needle
):
    if module is not None:
        (tmp_path / "nosuchmod.py").write_text(module)
    monkeypatch.delitem(sys.modules, "nosuchmod", raising=False)
    result = cli("train", "model._target_=nosuchmod.Net", "allow_targets=[nosuchmod]", *TINY)
    assert result.exit_code == 2, result.output
    assert needle in " ".join(result.output.split()) and "Traceback" not in result.output
    assert not (tmp_path / "outputs").exists()


def test_an_admitted_module_admits_only_what_it_defines(cli, tmp_path, trap, monkeypatch):
    (tmp_path / "hopper.py").write_text(
        "import subprocess\nimport numpy as np\nrun = subprocess.run\n"
    )
    monkeypatch.delitem(sys.modules, "hopper", raising=False)
    for target in ("hopper.subprocess.run", "hopper.np.load", "hopper.run"):
        result = cli("train", f"model._target_={target}", "allow_targets=[hopper]", *TINY)
        _assert_refused(result, trap, tmp_path, "allowlist", "outside hopper")


def test_the_builtin_allowlist_is_exactly_what_the_readme_lists():
    """Every callable a config may name without the user's admission, listed in the docs;
    each packaged option builds one of them; each resolves to what its name says."""
    from omegaconf import OmegaConf

    from mlcli.config import allowlist
    from tests import docs

    section = docs.page("guide/security.md")
    for package, names in allowlist.BUILDERS.items():
        assert f"`{package}`: {', '.join(names)}" in " ".join(section.split()), package
    for target in allowlist.BUILDER_TARGETS:
        obj = allowlist.admit("x", target).obj
        assert callable(obj) and obj.__module__.startswith(target.rpartition(".")[0])
    for target in allowlist.TORCH_CLASSES:
        assert allowlist.admit("x", target).reason == allowlist.TORCH_REASON
        assert target.rpartition(".")[2] in section
    conf = Path(__file__).parents[1] / "conf"
    for path in conf.rglob("*.yaml"):
        target = OmegaConf.load(path).get("_target_")
        if target is not None and "hydra" not in path.parts:
            assert target in allowlist.BUILDER_TARGETS | allowlist.TORCH_CLASSES, path


# --------------------------------------------------------------------------------------------------
# Logging configs from a shipped ./conf.


def _logging_attacks(t: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Files of a ./conf folder: each makes Hydra's logging set-up write or run something."""
    v, pkl = str(t["victim"]), str(t["pickled"])
    to_victim = {"class": "logging.FileHandler", "filename": v, "mode": "w"}
    return {
        "job_logging file handler": {
            "config.yaml": {"job_logging": {"handlers": {"file": to_victim}}}
        },
        "hydra_logging file handler": {
            "config.yaml": {
                "hydra_logging": {"handlers": {"file": to_victim}, "root": {"handlers": ["file"]}}
            }
        },
        "shadowed default": {
            "hydra/job_logging/default.yaml": (
                "version: 1\nhandlers:\n  f:\n    class: logging.FileHandler\n"
                f"    filename: {v}\n    mode: w\nroot:\n  handlers: [f]\n"
            )
        },
        "handler class that is no handler": {
            "config.yaml": {
                "job_logging": {
                    "handlers": {"console": {"class": "shutil.copyfile", "src": pkl, "dst": v}}
                }
            }
        },
        "formatter class": {
            "config.yaml": {
                "job_logging": {
                    "formatters": {
                        "simple": {"class": "shutil.copyfile", "format": pkl, "datefmt": v}
                    }
                }
            }
        },
        "stream from elsewhere": {
            "config.yaml": {
                "job_logging": {
                    "handlers": {"console": {"stream": "ext://mlcli.runner.subprocess.run"}}
                }
            }
        },
    }


LOGGING_ATTACKS = [
    "job_logging file handler",
    "hydra_logging file handler",
    "shadowed default",
    "handler class that is no handler",
    "formatter class",
    "stream from elsewhere",
]


def _ship_files(root: Path, files: dict[str, Any]) -> None:
    for name, text in files.items():
        if name == "config.yaml":
            _ship_config(root, hydra=text)
        else:
            (root / "conf" / name).parent.mkdir(parents=True, exist_ok=True)
            (root / "conf" / name).write_text(text)


@pytest.mark.parametrize("flags", [[], ["--dry-run"], ["-m", "seed=0,1"], ["--hydra-help"]])
@pytest.mark.parametrize("attack", LOGGING_ATTACKS)
def test_a_shipped_logging_config_is_refused(cli, tmp_path, trap, attack, flags):
    _ship_files(tmp_path, _logging_attacks(trap)[attack])
    _assert_refused(cli("train", *TINY, *flags), trap, tmp_path, "--trust-overrides")


def test_hydras_own_logging_configs_still_work(cli, tmp_path):
    """Refusing is about what a config does: Hydra's default job log is written as before."""
    assert cli("train", "dataset=wine", "model=linear", *TINY).exit_code == 0
    (status,) = (tmp_path / "outputs").rglob("status.json")
    assert (status.parent / "app.log").is_file()
    _ship_config(tmp_path, hydra={"job_logging": {"root": {"level": "WARNING"}}})
    assert cli("train", "dataset=wine", "model=linear", "seed=1", *TINY).exit_code == 0


# --------------------------------------------------------------------------------------------------
# No setting writes outside the outputs root or into someone else's files.


@pytest.mark.parametrize(
    ("hydra", "key"),
    [
        ({"output_subdir": "../../escaped"}, "hydra.output_subdir"),
        ({"job": {"name": "../../escaped"}}, "hydra.job.name"),
        ({"sweep": {"subdir": "../../escaped"}}, "hydra.sweep.subdir"),
    ],
    ids=["output_subdir", "job.name", "sweep.subdir"],
)
def test_hydra_names_that_leave_the_run_dir_are_refused(cli, tmp_path, monkeypatch, hydra, key):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    _ship_config(work, hydra=hydra)
    for flags in ([], ["-m", "seed=0,1"]) if "sweep" not in hydra else (["-m", "seed=0,1"],):
        result = cli("train", "dataset=wine", "model=linear", *TINY, *flags)
        assert result.exit_code == 2 and key in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]
    assert sorted(p.name for p in work.iterdir()) == ["conf"]


@pytest.mark.parametrize("multirun", [False, True], ids=["run.dir", "sweep.dir"])
def test_a_run_or_sweep_dir_that_holds_someone_elses_files_is_refused(
    cli, tmp_path, trap, multirun
):
    home = trap["victim"].parent
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    for source in ("command line", "shipped config"):
        args = ["dataset=wine", "model=linear", *TINY, *(["-m", "seed=0,1"] if multirun else [])]
        if source == "command line":
            args.append(f"{key}={home}")
        else:
            _ship_config(tmp_path, hydra={key.split(".")[1]: {"dir": str(home)}})
        before = sorted(p.name for p in home.iterdir())
        result = cli("train", *args)
        assert result.exit_code == 2 and key in result.output, (source, result.output)
        assert "did not write" in " ".join(result.output.split())
        assert sorted(p.name for p in home.iterdir()) == before, source
        assert trap["victim"].read_text() == "precious"


def test_an_optuna_storage_that_is_not_a_study_is_refused(cli, tmp_path, trap):
    study = ["-m", "hydra/sweeper=mlcli_optuna", "optim.lr=tag(log,interval(1e-3,1e-1))", *TINY]
    for storage in (str(trap["victim"]), f"sqlite:///{trap['victim']}"):
        result = cli(
            "train", *study, "hydra.sweeper.n_trials=1", f"hydra.sweeper.storage={storage}"
        )
        _assert_refused(result, trap, tmp_path, "hydra.sweeper.storage", "not an Optuna")
    (tmp_path / "conf" / "hydra" / "sweeper").mkdir(parents=True)
    (tmp_path / "conf" / "hydra" / "sweeper" / "shared.yaml").write_text(
        f"defaults:\n  - mlcli_optuna\n  - _self_\nstorage: {trap['victim']}\n"
    )
    result = cli("train", *study, "hydra/sweeper=shared")
    _assert_refused(result, trap, tmp_path, "hydra.sweeper.storage")


def test_an_outputs_root_that_is_a_file_or_the_filesystem_root_is_refused(cli, tmp_path, trap):
    from mlcli.sweeps import preflight

    _assert_refused(
        cli("train", f"outputs_root={trap['victim']}", *TINY), trap, tmp_path, "outputs_root"
    )
    for root in ("/", "/.", "/tmp/../"):
        _, problems = preflight.check([f"outputs_root={root}", *TINY])
        assert [p.key for p in problems] == ["outputs_root"], root


def _interrupted_run(cli, tmp_path: Path) -> Path:
    """A run that stopped after fold 0: the same command continues it in its run dir."""
    assert cli("train", *REUSED).exit_code == 0
    (status_file,) = (tmp_path / "outputs").rglob("status.json")
    status = json.loads(status_file.read_text())
    status.update(state="INTERRUPTED", folds_completed=[0])
    status_file.write_text(json.dumps(status))
    return status_file.parent


REUSED = ["dataset=wine", "model=linear", "stack_folds=off", *TINY]


@pytest.mark.parametrize("link", ["app.log", ".hydra", ".hydra/config.yaml", "error.log", "models"])
def test_a_reused_run_dir_is_never_written_through_a_symlink(cli, tmp_path, trap, link):
    run_dir = _interrupted_run(cli, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere if link in (".hydra", "models") else trap["victim"]
    path = run_dir / link
    if path.is_dir():
        import shutil

        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    path.symlink_to(target)
    result = cli("train", *REUSED)
    assert result.exit_code == 2 and "symbolic link" in " ".join(result.output.split())
    assert trap["victim"].read_text() == "precious"
    assert list(elsewhere.iterdir()) == []
    assert json.loads((run_dir / "status.json").read_text())["state"] == "INTERRUPTED"


def test_error_log_replaces_a_symlink_instead_of_writing_through_it(compose, tmp_path, trap):
    from mlcli.sweeps import app

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "error.log").symlink_to(trap["victim"])
    cfg = compose("dataset=csv", "dataset.path=missing.csv", "dataset.target=y", "progress=false")
    ended = app._train(cfg, run_dir, {})
    assert ended["state"] == "FAILED"
    assert trap["victim"].read_text() == "precious"
    assert (
        not (run_dir / "error.log").is_symlink()
        and "Traceback" in (run_dir / "error.log").read_text()
    )


def test_a_target_nested_in_hydras_launcher_settings_is_refused(cli, tmp_path, trap):
    """Hydra builds its launcher with ``instantiate``, nested nodes included."""
    pwn = {"_target_": "mlcli.checkpoint.save", "path": str(trap["victim"]), "payload": {}}
    _ship_config(tmp_path, hydra={"launcher": {"additional_parameters": {"pwn": pwn}}})
    args = ["-m", "hydra/launcher=submitit_slurm", "seed=0,1", "dataset=wine", *TINY]
    _assert_refused(cli("train", *args), trap, tmp_path, "hydra.launcher.additional_parameters")


RAY_PRESET = """# @package _global_
defaults:
  - override /hydra/launcher: ray
hydra:
  launcher:
    ray:
      init:
        runtime_env:
          env_vars:
            LD_PRELOAD: ./evil.so
            TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD: "1"
"""
SLURM_PRESET = """# @package _global_
defaults:
  - override /hydra/launcher: submitit_slurm
hydra:
  launcher:
    setup: ["touch ./PWNED"]
"""


@pytest.mark.parametrize("dry_run", [True, False])
@pytest.mark.parametrize(
    ("preset", "key"),
    [(RAY_PRESET, "hydra.launcher.ray.init.runtime_env"), (SLURM_PRESET, "hydra.launcher.setup")],
)
def test_a_shipped_preset_cannot_set_a_launchers_environment_or_shell_lines(
    cli, tmp_path, preset, key, dry_run
):
    """A ./conf preset from someone else's repository that sets Ray's runtime_env (LD_PRELOAD,
    unsafe torch loads in every worker) or submitit's sbatch setup lines: exit 2, nothing run
    or written."""
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "fast.yaml").write_text(preset)
    args = ["-m", "+experiment=fast", *TINY, *(["--dry-run"] if dry_run else [])]
    result = cli("train", *args)
    assert result.exit_code == 2, result.output
    assert key in result.output
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "PWNED").exists()


def test_a_launchers_runtime_env_from_the_command_line_is_refused_too(cli, tmp_path):
    preload = "+hydra.launcher.ray.init.runtime_env.env_vars.LD_PRELOAD=./evil.so"
    result = cli("train", "-m", "hydra/launcher=ray", preload, *TINY)
    assert result.exit_code == 2, result.output
    assert "hydra.launcher.ray.init.runtime_env" in result.output
    assert not (tmp_path / "outputs").exists()


TUNED_ATTACKS = {
    "model._target_": "model:\n  _target_: os.system\n",
    "hydra.job.env_set": (
        "hydra:\n  job:\n    env_set:\n      TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD: '1'\n"
    ),
}


@pytest.mark.parametrize("dry_run", [True, False])
@pytest.mark.parametrize("attack", sorted(TUNED_ATTACKS))
def test_a_shipped_tuned_combination_is_judged_like_any_config(cli, tmp_path, attack, dry_run):
    """conf/tuned/ options are chosen by the combination of groups, not by the user (Hydra's
    ``optional tuned: ${dataset}_${model}_${optim}``): a shipped one for a plain job that builds
    a callable off the allowlist, or sets the jobs' environment, is refused before anything
    runs, with and without --dry-run, and nothing is written."""
    _ship(tmp_path, "tuned", "iris_linear_adam", "# @package _global_\n" + TUNED_ATTACKS[attack])
    args = ["dataset=iris", "model=linear", "epochs=1", *(["--dry-run"] if dry_run else [])]
    result = cli("train", *args)
    assert result.exit_code == 2, result.output
    assert ("os.system" if attack == "model._target_" else attack) in result.output
    assert not (tmp_path / "outputs").exists()
