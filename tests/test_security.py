"""Input you cannot trust: every attack is refused before anything runs or is written."""

from __future__ import annotations

import ast
import json
import pickle
from pathlib import Path

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

    from mlcli import checkpoint

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
