"""Shell completion: the candidates, and what a real interactive bash, zsh and fish show.

The shell tests drive the shell itself in a pseudo-terminal (pexpect) and read its screen
(pyte, a terminal emulator), as a user would see it: `mlcli train model=<TAB><TAB>` in bash
splits the word at `=` and must still list the model options. bash is never skipped; zsh and
fish are tested where they are installed (`.ci/run` installs them when it can).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pexpect
import pyte
import pytest
import typer.main

from mlcli.cli import app
from mlcli.cli.completion import SCRIPTS, for_shell, install, split_line
from mlcli.cli.completion import candidates as _candidates
from mlcli.config import catalog, group_options


def candidates(line: str) -> list[str]:
    """What mlcli's completion offers for ``line``, from mlcli's own commands."""
    return _candidates(line, typer.main.get_command(app))


BIN = Path(sys.executable).parent
MODELS = group_options()["model"]
ADAM_KEYS = {f"optim.{k.name}=" for k in catalog.option("optim", "adam").keys}
SGD_KEYS = {f"optim.{k.name}=" for k in catalog.option("optim", "sgd").keys}


def test_adam_and_sgd_keys_are_read_from_their_files():
    assert {"optim.lr=", "optim.betas=", "optim.eps=", "optim.weight_decay="} == ADAM_KEYS
    assert {"optim.lr=", "optim.momentum=", "optim.nesterov=", "optim.weight_decay="} == SGD_KEYS


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("mlcli train model=", {f"model={m}" for m in MODELS}),
        ("mlcli train model=cn", {"model=cnn", "model=cnn1d"}),
        ("mlcli train -m optim=sgd,ad", {"optim=sgd,adam", "optim=sgd,adagrad", "optim=sgd,adamw"}),
        ("mlcli train optim.", ADAM_KEYS),  # the default option's keys
        ("mlcli train optim=sgd optim.", SGD_KEYS),  # the chosen option's keys
        ("mlcli train +optim.we", {"+optim.weight_decay="}),
        ("mlcli train scheduler.warmup=", {"scheduler.warmup=none", "scheduler.warmup=constant",
                                            "scheduler.warmup=linear"}),
        ("mlcli train stack_folds=o", {"stack_folds=on", "stack_folds=off"}),
        ("mlcli train analysis=hessian analysis.hessian.es",
         {"analysis.hessian.escape=", "analysis.hessian.escape_step="}),
        ("mlcli train ep", {"epochs="}),
        ("mlcli train hydra/sw", {"hydra/sweeper="}),
        (
            "mlcli train hydra/sweeper=",
            {"hydra/sweeper=basic", "hydra/sweeper=mlcli_optuna", "hydra/sweeper=paired"},
        ),
        ("mlcli train --cfg ", {"job", "hydra", "all"}),
        ("mlcli train --dr", {"--dry-run"}),
        ("mlcli report --format m", {"markdown"}),
        ("mlcli --show-completion ", {"bash", "zsh", "fish"}),
        ("mlcli tr", {"train"}),
        ("mlcli train 'model.hidden=[64,3", set()),  # an open quote is the word being typed
        ("mlcli report outputs/", set()),  # paths: the shell's own file completion
    ],
)  # fmt: skip
def test_candidates(line, expected):
    assert set(candidates(line)) == expected


def test_the_launchers_are_those_hydra_finds_and_train_help_lists():
    from mlcli.cli.completion import hydra_group_options

    launchers = hydra_group_options("hydra/launcher")
    assert {"basic", "joblib", "submitit_local", "submitit_slurm", "slurm", "stacked"} <= set(
        launchers
    )
    assert set(candidates("mlcli train hydra/launcher=")) == {
        f"hydra/launcher={name}" for name in launchers
    }
    # `train --help` lists them without importing Hydra: the same names.
    for group in catalog.HYDRA_GROUPS:
        assert catalog.hydra_options(group) == hydra_group_options(group), group


def test_a_user_conf_option_is_offered(tmp_path):
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "tiny.yaml").write_text("_target_: mypkg.Tiny\nwidth: 8\n")
    assert "model=tiny" in candidates("mlcli train model=")
    assert candidates("mlcli train model=tiny model.") == ["model.width="]


def test_bash_gets_the_part_after_the_last_word_break():
    _, current = split_line("mlcli train hydra/launcher=jo")
    assert current == "hydra/launcher=jo"
    assert for_shell(["hydra/launcher=joblib"], current, "=:") == ["joblib"]
    assert for_shell(["optim.lr="], "optim.l", "=:") == ["optim.lr="]


def test_install_writes_the_script_and_one_line_in_the_rc_file(tmp_path):
    for _ in range(2):
        script, rc = install("bash", home=tmp_path)
    assert script.read_text() == SCRIPTS["bash"]
    assert rc is not None and rc.read_text().count("mlcli.sh") == 1
    script, rc = install("fish", home=tmp_path)
    assert script == tmp_path / ".config/fish/completions/mlcli.fish" and rc is None


# ---- real shells ----------------------------------------------------------------------------


class Terminal:
    """An interactive shell in a 100×30 pseudo-terminal, and what its screen shows."""

    def __init__(self, argv: list[str], home: Path) -> None:
        env = {
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(home),
            "TERM": "xterm",
            "LANG": "C.UTF-8",
            "INPUTRC": "/dev/null",  # readline's defaults: TAB TAB lists, no query under 100
        }
        self.screen = pyte.Screen(100, 30)
        self.stream = pyte.Stream(self.screen)
        self.child = pexpect.spawn(
            argv[0], argv[1:], env=env, cwd=str(home), encoding="utf-8", dimensions=(30, 100)
        )

    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display]

    def wait(self, predicate, timeout: float = 30.0) -> bool:
        """Read the shell's output until ``predicate(lines)`` holds (or time runs out)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate(self.lines()):
                return True
            try:
                self.stream.feed(self.child.read_nonblocking(65536, timeout=0.2))
            except pexpect.TIMEOUT:
                continue
        return predicate(self.lines())

    def send(self, text: str) -> None:
        self.child.send(text)

    def close(self) -> None:
        self.child.terminate(force=True)


def _listing(lines: list[str], typed: str) -> set[str]:
    """The words listed below the last line showing ``typed``, up to the next prompt."""
    rows = [i for i, line in enumerate(lines) if line.endswith(typed)]
    if not rows:
        return set()
    start = rows[0]
    words: set[str] = set()
    for line in lines[start + 1 :]:
        if line.startswith("READY$"):
            break
        words.update(w.lstrip("…") for w in line.split())
    return words


SETUP = {
    "bash": (["bash", "--norc", "--noprofile", "-i"], "PS1='READY$ '", "\t\t"),
    "zsh": (["zsh", "-f", "-i"], "PS1='READY$ '; autoload -Uz compinit && compinit -u", "\t"),
    "fish": (
        ["fish", "--no-config", "-i"],
        "function fish_prompt; echo -n 'READY$ '; end",
        "\t",
    ),
}
LOAD = {
    "bash": 'eval "$(mlcli --show-completion bash)"',
    "zsh": 'eval "$(mlcli --show-completion zsh)"',
    "fish": "mlcli --show-completion fish | source",
}


def _shell(name: str, home: Path) -> Terminal:
    if shutil.which(name) is None:
        if name == "bash":
            pytest.fail("bash is not installed: the completion test needs it")
        pytest.skip(f"{name} is not installed here (.ci/run installs it where apt-get works)")
    argv, setup, _ = SETUP[name]
    terminal = Terminal(argv, home)
    terminal.send(f"{setup}; {LOAD[name]}; echo LOADED\r")
    assert terminal.wait(lambda lines: any(line == "LOADED" for line in lines)), terminal.lines()
    return terminal


def _complete(terminal: Terminal, shell: str, typed: str, expected: set[str]) -> set[str]:
    terminal.send("\x03")  # a fresh prompt
    terminal.wait(lambda lines: lines[-1].startswith("READY$") or True, timeout=0.5)
    terminal.screen.reset()
    terminal.send(typed + SETUP[shell][2])
    terminal.wait(lambda lines: _listing(lines, typed) >= expected)
    return _listing(terminal.lines(), typed)


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_a_real_shell_lists_the_model_options_and_the_optimizer_keys(shell, tmp_path):
    terminal = _shell(shell, tmp_path)
    try:
        # fish lists whole words (model=cnn), bash and zsh the part after '='.
        whole = shell == "fish"
        models = {f"model={m}" if whole else m for m in MODELS}
        assert _complete(terminal, shell, "mlcli train model=", models) == models
        assert _complete(terminal, shell, "mlcli train optim.", ADAM_KEYS) == ADAM_KEYS
        launchers = {
            f"launcher={n}" if whole else n for n in catalog.hydra_options("hydra/launcher")
        }
        listed = _complete(terminal, shell, "mlcli train hydra/launcher=", launchers)
        assert listed == launchers
    finally:
        terminal.close()


def test_bash_completes_a_unique_option_in_place_after_install(tmp_path):
    """`mlcli --install-completion bash` then a new interactive bash (reading ~/.bashrc):
    `model=cn<TAB>1` ... completes on the line itself."""
    terminal = Terminal([str(BIN / "mlcli"), "--install-completion", "bash"], tmp_path)
    terminal.child.expect(pexpect.EOF, timeout=60)
    terminal = Terminal(["bash", "-i"], tmp_path)
    try:
        terminal.send("PS1='READY$ '; echo LOADED\r")
        assert terminal.wait(lambda lines: "LOADED" in lines)
        terminal.send("mlcli train optim=sgd optim.mom\t")
        assert terminal.wait(lambda lines: any("optim.momentum=" in line for line in lines))
        terminal.send("0.9 hydra/launcher=jobl\t")
        done = "mlcli train optim=sgd optim.momentum=0.9 hydra/launcher=joblib "
        assert terminal.wait(lambda lines: any(line.endswith(done.rstrip()) for line in lines))
    finally:
        terminal.close()
