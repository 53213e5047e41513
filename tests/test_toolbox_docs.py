"""The models page (docs/guide/models.md): every option is documented and every example runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlcli.config import packaged_conf_dir
from mlcli.rundir import read_json
from tests import docs

# One epoch on one split, and the generated sequence sets made small: enough to run end to end.
QUICK = ["epochs=1", "cv=holdout", "progress=false"]
SMALL = {"seq_reverse": ["dataset.n_samples=200"], "hmm_tagging": ["dataset.n_samples=200"]}


def _section() -> str:
    return docs.page("guide/models.md")


def _commands() -> list[str]:
    block = _section().split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]


@pytest.mark.parametrize("group", ["model", "optim", "scheduler"])
def test_every_option_is_documented(group):
    section = _section()
    for path in (packaged_conf_dir() / group).glob("*.yaml"):
        assert f"| `{path.stem}` |" in section, (group, path.stem)


@pytest.mark.parametrize("command", _commands())
def test_docs_example_runs(cli, command):
    args = command.split()
    assert args[:2] == ["mlcli", "train"]
    dataset = next((a.split("=", 1)[1] for a in args if a.startswith("dataset=")), "digits")
    result = cli(*args[1:], *QUICK, *SMALL.get(dataset, []))
    assert result.exit_code == 0, result.output
    (status_path,) = Path("outputs").rglob("status.json")
    assert read_json(status_path)["state"] == "COMPLETED"
