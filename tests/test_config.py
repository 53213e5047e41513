"""Every config option composes and builds; schemas reject what they should."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mlcli import runner
from mlcli.build import instantiate
from mlcli.config import GROUPS, group_options, packaged_conf_dir, validate

CONF = packaged_conf_dir()
# Datasets whose task needs a sequence model (per-token tags, or an output sequence).
SEQUENCE_TASKS = ("tagging", "seq2seq")
SEQUENCE_DATASETS = {"hmm_tagging", "seq_reverse"}
OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((CONF / group).glob("*.yaml"))]


def test_every_option_file_has_a_usage_comment_and_a_target():
    for group, option in OPTIONS:
        text = (CONF / group / f"{option}.yaml").read_text()
        assert text.startswith("#") and "mlcli train" in text.splitlines()[1], (group, option)
        assert "_target_:" in text, (group, option)


def _needs_a_file(option: str) -> list[str]:
    """Overrides that point dataset=csv/npz at a sample file (npz written to the test's cwd)."""
    if option == "csv":
        homework = Path(__file__).parent / "data" / "homework.csv"
        return [f"dataset.path={homework}", "dataset.target=target", "dataset.drop=[id]"]
    if option == "npz":
        rng = np.random.default_rng(0)
        np.savez("sample.npz", X=rng.normal(size=(40, 3)), y=np.arange(40) % 2)
        return ["dataset.path=sample.npz"]
    return []


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=lambda v: str(v))
def test_every_option_composes_validates_and_builds(compose, group, option):
    cfg = compose(f"{group}={option}", *(_needs_a_file(option) if group == "dataset" else []))
    assert validate(cfg) == []
    dataset = runner.build_dataset(cfg)
    if dataset.task in SEQUENCE_TASKS:
        # The default model (mlp) has no per-element or decoder output: only these two datasets
        # may take this branch, and tests/test_datasets.py checks their contract.
        assert option in SEQUENCE_DATASETS, f"{option}: pair this {dataset.task} set with a model"
        assert dataset.lengths is not None and dataset.y.ndim == 2
        return
    model = instantiate(
        cfg.model, "model", in_shape=dataset.in_shape, out_features=dataset.out_features
    )
    optimizer = instantiate(cfg.optim, "optim")(model.parameters())
    scheduler = instantiate(cfg.scheduler, "scheduler")(optimizer, total_steps=10)
    x = torch.from_numpy(dataset.X[:4])
    out = model(x)
    assert out.shape == (4, dataset.out_features)
    out.float().sum().backward()
    optimizer.step()
    scheduler.step()
    splitter = instantiate(cfg.cv, "cv")
    assert splitter.get_n_splits() >= 1


def test_group_options_lists_the_packaged_files():
    options = group_options()
    assert options["model"] == sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
    assert set(options) == set(GROUPS)


def test_defaults_are_the_documented_ones(compose):
    cfg = compose()
    assert cfg.dataset._target_ == "mlcli.data.digits"
    assert cfg.model._target_ == "mlcli.models.mlp"
    assert cfg.optim._target_ == "torch.optim.Adam"
    assert cfg.cv._target_ == "mlcli.cv.kfold" and cfg.cv.n_splits == 5


def test_validate_reports_every_problem_at_once(compose):
    cfg = compose("optim.lr=-1", "epochs=0", "+optim.nope=1")
    keys = sorted(p.key for p in validate(cfg))
    assert keys == ["epochs", "optim.lr", "optim.nope"]


def test_conf_dir_ships_inside_the_wheel():
    text = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert '"conf" = "mlcli/conf"' in text


def test_user_conf_dir_is_searched_first(compose, tmp_path):
    """A ./conf option with a packaged option's name replaces it (and adds new ones)."""
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "mlp.yaml").write_text(
        "defaults:\n  - /schema/model/mlp@_here_\n  - _self_\n_target_: mlcli.models.mlp\n"
        "hidden: [7]\n"
    )
    assert list(compose().model.hidden) == [7]
    assert list(compose(config_dir=str(CONF)).model.hidden) == [128]
