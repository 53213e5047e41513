"""Every config option composes and builds; schemas reject what they should."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mlcli import runner
from mlcli.config import GROUPS, group_options, packaged_conf_dir, validate
from mlcli.config.targets import instantiate
from mlcli.data.preprocess import fold_tensors
from mlcli.engine.loop import fit, forward
from mlcli.models import build_model

CONF = packaged_conf_dir()
CPU = torch.device("cpu")
OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((CONF / group).glob("*.yaml"))]


def test_every_option_file_has_a_usage_comment_and_a_target():
    for group, option in OPTIONS:
        text = (CONF / group / f"{option}.yaml").read_text()
        assert text.startswith("#") and "mlcli train" in text.splitlines()[1], (group, option)
        assert "_target_:" in text, (group, option)


# Options that need other data or another model than the defaults (digits, mlp), and their pair.
PAIRED: dict[tuple[str, str], list[str]] = {
    ("model", "sigmoid_sum"): ["dataset=curve"],
    ("model", "relu_sum"): ["dataset=curve"],
    ("model", "cnn1d"): ["dataset=mnist1d"],
    ("model", "attention"): ["dataset=japanese_vowels"],
    ("model", "transformer"): ["dataset=seq_reverse", "dataset.n_samples=100"],
    ("dataset", "hmm_tagging"): ["model=attention", "model.head=token", "dataset.n_samples=100"],
    ("dataset", "seq_reverse"): ["model=transformer", "dataset.n_samples=100"],
    ("dataset", "text"): ["model=attention"],
    ("dataset", "tagged"): ["model=attention", "model.head=token"],
    ("dataset", "pairs"): ["model=transformer"],
}


def _expected_shape(dataset, n: int) -> tuple[int, ...]:
    if dataset.task in ("tagging", "seq2seq"):
        return (n, dataset.y.shape[1], dataset.out_features)
    return (n, dataset.out_features)


def _needs_a_file(option: str) -> list[str]:
    """Overrides that point dataset=csv/npz at a sample file (npz written to the test's cwd)."""
    if option == "csv":
        homework = Path(__file__).parent / "data" / "homework.csv"
        return [f"dataset.path={homework}", "dataset.target=target", "dataset.drop=[id]"]
    if option == "npz":
        rng = np.random.default_rng(0)
        np.savez("sample.npz", X=rng.normal(size=(40, 3)), y=np.arange(40) % 2)
        return ["dataset.path=sample.npz"]
    if option == "images":
        from bench.shapes import make_folder

        make_folder(Path("pictures"), per_class=4, size=12, n_classes=3)
        return ["dataset.path=pictures", "dataset.size=12"]
    samples = {"text": ("reviews", "reviews.csv"), "tagged": ("conll", "train.conll")}
    if option in (*samples, "pairs"):
        from mlcli.data.textsamples import write

        kind, name = samples.get(option, ("pairs", "pairs.csv"))
        write(kind, Path(name), 40)
        return [f"dataset.path={name}"]
    return []


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=lambda v: str(v))
def test_every_option_composes_validates_and_builds(compose, group, option):
    paired = PAIRED.get((group, option), [])
    files = _needs_a_file(option) if group == "dataset" else []
    cfg = compose(f"{group}={option}", *paired, *files)
    assert validate(cfg) == []
    dataset = runner.build_dataset(cfg)
    index = np.arange(len(dataset.y))
    data = fold_tensors(dataset, index[:8], index[8:12], index[:0], cfg.dataset, CPU)
    model = build_model(cfg.model, dataset, in_shape=tuple(data.x_train.shape[1:]))
    optimizer = instantiate(cfg.optim, "optim")(model.parameters())
    scheduler = instantiate(cfg.scheduler, "scheduler")(optimizer, total_steps=10)
    out = forward(model, dataset.task, data.x_train, data.lengths_train, data.y_train)
    assert out.shape == _expected_shape(dataset, 8)
    # Two optimizer steps through the real loop: finite train and val metrics, lr recorded.
    rows = fit(model, optimizer, scheduler, data, task=dataset.task, epochs=1, batch_size=4,
               generator=torch.Generator().manual_seed(0))  # fmt: skip
    metrics = {f"{split}/{metric}": value for _, split, metric, value in rows}
    assert "train/lr" in metrics and all(np.isfinite(list(metrics.values())))
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


def test_a_user_config_yaml_that_replaces_mlcli_s_is_named(cli, tmp_path):
    """A ./conf/config.yaml without mlcli's defaults list shadows mlcli's own: the error names
    that file and the way out, instead of 'model: unknown key. Did you mean model?'."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text("epochs: 3\n")
    result = cli("train", "model=linear", "progress=false")
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "replaces mlcli's own config.yaml" in text
    assert str(tmp_path / "conf" / "config.yaml") in "".join(result.output.split())
    assert "Rename that file" in text
    assert "Did you mean 'model'" not in text
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("override", ["model.width=3", "+model.width=3"])
def test_an_unknown_key_of_an_option_without_keys_says_so(cli, override):
    """``model=linear`` takes no keys: the error says so instead of listing no valid keys."""
    result = cli("train", "model=linear", override, "--dry-run")
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "model.width: unknown key" in text and "This option has no keys to set." in text
    assert "Valid keys here" not in text
