"""Shell completion (bash, zsh, fish): ``GROUP=<TAB>``, ``optim.<TAB>``, ``hydra/launcher=<TAB>``.

Each shell's script (``mlcli --show-completion SHELL``) hands mlcli the command line up to the
cursor (``_MLCLI_COMPLETION=SHELL``, ``COMP_LINE``); :func:`respond` prints one candidate a
line. The line is split here, with shell quoting (``'model.hidden=[64,32]'``), so the word being
completed is whole. Bash splits words at ``=`` and ``:`` (``COMP_WORDBREAKS``) and replaces only
the part after the last of them, so for bash (and for zsh, whose script strips up to ``=`` with
``compset``) each candidate is cut the same way: ``model=<TAB><TAB>`` lists ``cnn  linear  mlp
...``. Candidates that expect more (``optim.lr=``, ``optim.``) get no trailing space.

What is offered comes from the config files (:mod:`mlcli.config.catalog`), the Typer commands' own
options and, for ``hydra/<group>=``, Hydra's config loader (the plug-ins installed now).
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mlcli.config import GROUPS, catalog

SHELLS = ("bash", "zsh", "fish")
ENV = "_MLCLI_COMPLETION"

# Hydra's flags that `mlcli train` passes on, and the values some of them take.
HYDRA_FLAGS = ("-m", "--multirun", "--cfg", "--resolve", "--info", "--hydra-help", "--config-dir")
FLAG_VALUES = {
    "--cfg": ("job", "hydra", "all"),
    "-c": ("job", "hydra", "all"),
    "--info": ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath"),
    "-i": ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath"),
}
PATH_FLAGS = ("--config-dir", "-cd", "--resume", "--plots", "--out", "-o")


def split_line(line: str) -> tuple[list[str], str]:
    """The words before the cursor and the (unquoted) word being completed."""
    try:
        words = shlex.split(line)
    except ValueError:  # an open quote: the word being typed
        for quote in ("'", '"'):
            try:
                words = shlex.split(line + quote)
                break
            except ValueError:
                continue
        else:
            return line.split(), ""
    if not line or line[-1].isspace():
        return words, ""
    return words[:-1], words[-1] if words else ""


def _command_options(
    root: Any, subcommand: str | None
) -> tuple[list[str], dict[str, tuple[str, ...]]]:
    """The options of ``mlcli`` (no subcommand) or of a subcommand, and the choices of those
    that take one (read from ``root``, the click group of the Typer app: one definition of each
    option)."""
    group: Any = root
    command = group if subcommand is None else group.commands.get(subcommand)
    if command is None:
        return [], {}
    names: list[str] = []
    choices: dict[str, tuple[str, ...]] = {}
    for param in command.params:  # click's (or Typer's vendored click's) Option objects
        if param.param_type_name != "option" or getattr(param, "hidden", False):
            continue
        names += [*param.opts, *param.secondary_opts]
        if getattr(param.type, "choices", None):
            for name in param.opts:
                choices[name] = tuple(str(c) for c in param.type.choices)
    names.append("--help")
    return names, choices


def _chosen(words: list[str], group: str) -> list[str]:
    """The option(s) of ``group`` named on the line (the last wins), else the default."""
    chosen: list[str] = []
    for word in words:
        key, sep, value = word.lstrip("+~").partition("=")
        if sep and key == group and value:
            chosen = [v.strip() for v in value.strip("[]").split(",") if v.strip()]
    if chosen:
        return chosen
    default = catalog.default_choices().get(group)
    return [default] if default else []


def _config_dir(words: list[str]) -> str | None:
    for i, word in enumerate(words):
        if word in ("--config-dir", "-cd") and i + 1 < len(words):
            return words[i + 1]
        if word.startswith("--config-dir="):
            return word.split("=", 1)[1]
    return None


def _group_keys(group: str, words: list[str], config_dir: str | None) -> list[catalog.Key]:
    keys: dict[str, catalog.Key] = {}
    for name in _chosen(words, group):
        found = catalog.option(group, name, config_dir)
        if found is not None:
            keys.update({k.name: k for k in found.keys})
    if group == "analysis" and not keys:  # analysis=none: what the others would add
        for found in catalog.options(group, config_dir):
            keys.update({k.name: k for k in found.keys})
    return list(keys.values())


def hydra_group_options(group: str, config_dir: str | None = None) -> list[str]:
    """The options of a Hydra group (``hydra/launcher``) as Hydra finds them now: its core
    plug-ins, the installed plug-in packages and the config dirs."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path

    from mlcli.config import packaged_conf_dir, search_dirs

    search_path = create_config_search_path(str(packaged_conf_dir()))
    for directory in search_dirs(config_dir)[:-1]:
        search_path.prepend(provider="mlcli-user", path=f"file://{directory}")
    return sorted(ConfigLoaderImpl(config_search_path=search_path).get_group_options(group))


def _train_candidates(words: list[str], current: str) -> list[str]:
    config_dir = _config_dir(words)
    prefix = current[: len(current) - len(current.lstrip("+~"))]
    word = current[len(prefix) :]
    key, sep, value = word.partition("=")
    if sep:
        done, _, partial = value.rpartition(",")
        head = f"{prefix}{key}={done + ',' if done else ''}"
        if key in GROUPS:
            values = [o.name for o in catalog.options(key, config_dir)]
        elif key.startswith("hydra/"):
            values = hydra_group_options(key, config_dir)
        else:
            values = list(_key_choices(key, words, config_dir))
        return [f"{head}{v}" for v in values if v.startswith(partial)]
    if "." in word:
        group = word.split(".", 1)[0]
        if group not in GROUPS:
            return []
        names = [f"{group}.{k.name}=" for k in _group_keys(group, words, config_dir)]
        return [f"{prefix}{n}" for n in names if n.startswith(word)]
    names = [f"{g}=" for g in GROUPS] + [f"{g}." for g in GROUPS]
    names += [f"{g}=" for g in catalog.HYDRA_GROUPS]
    names += [f"{k.name}=" for k in catalog.run_settings()]
    return [f"{prefix}{n}" for n in names if n.startswith(word)]


def _key_choices(key: str, words: list[str], config_dir: str | None) -> Iterable[str]:
    """The values a key takes when they are few (an enum, a boolean)."""
    group, _, rest = key.partition(".")
    if group in GROUPS and rest:
        keys = _group_keys(group, words, config_dir)
    else:
        keys, rest = catalog.run_settings(), key
    for k in keys:
        if k.name == rest:
            return k.choices
    return ()


def candidates(line: str, root: Any) -> list[str]:
    """Every word that may replace the word being completed (whole words, shell-unquoted);
    ``root`` is mlcli's click group (``typer.main.get_command(app)``)."""
    words, current = split_line(line)
    rest = words[1:]
    subcommand = next((w for w in rest if not w.startswith("-")), None)
    options, choices = _command_options(root, subcommand)
    previous = words[-1] if words else ""
    if previous in choices:
        return [c for c in choices[previous] if c.startswith(current)]
    if previous in FLAG_VALUES and subcommand == "train":
        return [c for c in FLAG_VALUES[previous] if c.startswith(current)]
    if previous in PATH_FLAGS:
        return []  # the shell completes file names
    if subcommand is None:
        names = [*options, "train", "report"]
    elif current.startswith("-"):
        names = [*options, *HYDRA_FLAGS] if subcommand == "train" else options
    elif subcommand == "train":
        return _train_candidates(words, current)
    else:
        return []  # report: run dirs, which the shell completes
    return [n for n in dict.fromkeys(names) if n.startswith(current)]


def for_shell(words: list[str], current: str, wordbreaks: str) -> list[str]:
    """Cut each candidate after the last of ``wordbreaks`` in the word being completed (bash
    replaces only that part)."""
    cut = max((current.rfind(c) for c in wordbreaks), default=-1) + 1
    return [w[cut:] for w in words]


def respond(root: Any, environ: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """Print the candidates for the line in ``COMP_LINE`` (up to ``COMP_POINT``), one a line;
    ``root``: mlcli's click group."""
    shell = environ.get(ENV, "bash")
    line = environ.get("COMP_LINE", "")
    point = environ.get("COMP_POINT", "")
    if point.isdigit():
        line = line[: int(point)]
    found = candidates(line, root)
    if shell == "bash":
        found = for_shell(found, split_line(line)[1], environ.get("COMP_WORDBREAKS", "=:"))
    elif shell == "zsh":
        found = for_shell(found, split_line(line)[1], "=")
    sys.stdout.write("".join(f"{w}\n" for w in found))


_BASH = r"""# mlcli's completion for bash: eval "$(mlcli --show-completion bash)"
_mlcli_completion() {
    local IFS=$'\n'
    COMPREPLY=( $(env _MLCLI_COMPLETION=bash COMP_LINE="$COMP_LINE" COMP_POINT="$COMP_POINT" \
        COMP_WORDBREAKS="$COMP_WORDBREAKS" "$1" 2>/dev/null) )
    if [[ ${#COMPREPLY[@]} -eq 1 && ${COMPREPLY[0]} == *[=.] ]]; then
        compopt -o nospace
    fi
    return 0
}
complete -o default -o bashdefault -F _mlcli_completion mlcli
"""

_ZSH = r"""#compdef mlcli
# mlcli's completion for zsh: eval "$(mlcli --show-completion zsh)" after compinit, or this
# file as _mlcli in a directory of $fpath (mlcli --install-completion zsh)
_mlcli() {
    local -a found more
    local IFS=$'\n'
    found=( $(env _MLCLI_COMPLETION=zsh COMP_LINE="$LBUFFER" "${words[1]}" 2>/dev/null) )
    if [[ ${#found} -eq 0 ]]; then
        _files
        return
    fi
    [[ $PREFIX == *=* ]] && compset -P '*='
    more=( ${(M)found:#*[=.]} )
    found=( ${found:#*[=.]} )
    (( ${#more} )) && compadd -Q -S '' -- "${more[@]}"
    (( ${#found} )) && compadd -Q -- "${found[@]}"
}
if [[ "$funcstack[1]" == "_mlcli" ]]; then
    _mlcli "$@"  # autoloaded from $fpath by compinit: complete now
else
    compdef _mlcli mlcli
fi
"""

_FISH = r"""# mlcli's completion for fish: mlcli --show-completion fish | source
function __mlcli_completion
    env _MLCLI_COMPLETION=fish COMP_LINE=(commandline -cp) mlcli 2>/dev/null
end
complete -c mlcli -a '(__mlcli_completion)'
"""

SCRIPTS = {"bash": _BASH, "zsh": _ZSH, "fish": _FISH}

# Where `--install-completion` puts each script, and the line that loads it (None: the shell
# loads the file by itself).
_INSTALL: dict[str, tuple[str, str, str | None]] = {
    "bash": (".bash_completions/mlcli.sh", ".bashrc", "source ~/.bash_completions/mlcli.sh"),
    "zsh": (".zfunc/_mlcli", ".zshrc", "fpath+=~/.zfunc; autoload -Uz compinit; compinit"),
    "fish": (".config/fish/completions/mlcli.fish", "", None),
}


def install(shell: str, home: Path | None = None) -> tuple[Path, Path | None]:
    """Write the script where ``shell`` finds it, and the line that loads it into its rc file
    (once). Returns (script, rc file or None)."""
    home = home or Path.home()
    script_name, rc_name, line = _INSTALL[shell]
    script = home / script_name
    script.parent.mkdir(parents=True, exist_ok=True)
    from mlcli.rundir import atomic_write_text

    atomic_write_text(script, SCRIPTS[shell])
    if line is None:
        return script, None
    rc = home / rc_name
    text = rc.read_text(encoding="utf-8") if rc.is_file() else ""
    if line not in text:
        with rc.open("a", encoding="utf-8") as handle:
            handle.write(("" if not text or text.endswith("\n") else "\n") + line + "\n")
    return script, rc
