"""What can be set: every config group's options, their keys, types, defaults and comments.

Read from the config files themselves (``conf/<group>/<option>.yaml``, a user's ``./conf`` first)
and the schemas they extend, never from a second list kept by hand. Shell completion, ``mlcli
train --help`` and the generated reference pages all read it. It stays cheap: PyYAML and the
schema dataclasses, no Hydra, torch or pandas.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import importlib.util
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlcli.config import CONFIG_NAME, GROUPS, packaged_conf_dir, search_dirs

HYDRA_GROUPS: tuple[str, ...] = ("hydra/launcher", "hydra/sweeper")
"""Hydra's own config groups a user picks from (``hydra/launcher=joblib``)."""

_SCHEMA_REF = re.compile(r"^/?schema/(?P<group>[\w/]+)/(?P<name>\w+)@_here_$")
_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w.]*):(?P<rest>.*)$")
_STORE_CALL = re.compile(
    r"\.store\(\s*group=[\"'](?P<group>hydra/\w+)[\"']\s*,\s*name=[\"'](?P<name>\w+)[\"']"
)


@dataclass(frozen=True)
class Key:
    """One settable key: its dotted name below the group, default, type, bounds and comment."""

    name: str
    default: Any
    type: str = ""
    bounds: str = ""
    choices: tuple[str, ...] = ()
    comment: str = ""


@dataclass
class Option:
    """One option of a config group (one YAML file)."""

    group: str
    name: str
    path: Path
    header: list[str] = field(default_factory=list)
    """The file's leading comment lines, without ``#`` (``Usage: ...`` included)."""
    keys: list[Key] = field(default_factory=list)
    schema: type | None = None

    @property
    def summary(self) -> str:
        """The header's description (the lines before ``Usage:``), as one line."""
        lines = [h for h in self.header if not h.startswith("Usage:")]
        return " ".join(lines)

    @property
    def usage(self) -> str:
        """The header's ``Usage:`` command, or ``""``."""
        return next((h.split(":", 1)[1].strip() for h in self.header if h.startswith("Usage:")), "")


def _header(text: str) -> list[str]:
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return lines


def _comments(text: str) -> dict[str, str]:
    """``key: value  # comment`` → {dotted key: comment}; a comment-only line indented past its
    key continues that key's comment. Best effort (for help texts and docs, not for values)."""
    comments: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    last = ""
    for line in text.splitlines():
        match = _KEY_LINE.match(line)
        if match is None:
            stripped = line.strip()
            if stripped.startswith("#") and last and line.startswith(" "):
                comments[last] = f"{comments.get(last, '')} {stripped.lstrip('#').strip()}".strip()
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        name = ".".join([*(k for _, k in stack), match["key"]])
        stack.append((indent, match["key"]))
        rest = match["rest"]
        # A '#' inside quotes is part of the value; the comment starts at ' #'.
        comment = rest.split(" #", 1)[1].strip() if " #" in rest else ""
        if comment:
            comments[name] = comment
        last = name if comment else ""
    return comments


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: node}


def _unwrap(annotation: Any) -> Any:
    """``X | None`` → ``X``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _type_text(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    if text is None:
        text = str(annotation).replace("typing.", "")
    if typing.get_origin(annotation) is list:
        text = str(annotation)
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        text = " | ".join(_type_text(a) for a in typing.get_args(annotation))
    return {"NoneType": "null"}.get(text, text)


_BOUND_SIGNS = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤"}
_FIELD_LINE = re.compile(r"^\s+(?P<name>\w+): [^#]*?(?:#\s*(?P<comment>.*))?$")


def source_comments(cls: type) -> dict[str, str]:
    """The comment next to (or just above) each field in a dataclass's source, or the
    docstring just below it."""
    import inspect

    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    comments: dict[str, str] = {}
    above: list[str] = []
    field_name = ""  # the field a docstring below would describe
    docstring: list[str] | None = None
    for line in lines[1:]:
        stripped = line.strip()
        if docstring is not None:  # inside a multi-line docstring
            docstring.append(stripped.removesuffix('"""'))
            if stripped.endswith('"""'):
                comments[field_name] = " ".join(docstring).strip()
                docstring, field_name = None, ""
            continue
        if stripped.startswith('"""') and field_name:
            text = stripped[3:]
            if text.endswith('"""') and len(stripped) > 3:
                comments[field_name] = text[:-3].strip()
                field_name = ""
            else:
                docstring = [text]
            continue
        if stripped.startswith("#"):
            above.append(stripped.lstrip("#").strip())
            continue
        match = _FIELD_LINE.match(line)
        field_name = ""
        if match:
            text = match["comment"] or ""
            if text.startswith("noqa"):
                text = ""
            text = text or " ".join(above)
            if text:
                comments[match["name"]] = text
            else:
                field_name = match["name"]
        above = []
    return comments


def schema_keys(schema: type, prefix: str = "") -> dict[str, Key]:
    """Every leaf key of a schema dataclass (nested ones dotted): type, bounds, choices."""
    keys: dict[str, Key] = {}
    hints = typing.get_type_hints(schema)
    comments: dict[str, str] = {}
    for cls in reversed(schema.__mro__):  # a subclass's comment wins
        if dataclasses.is_dataclass(cls):
            comments.update(source_comments(cls))
    for f in dataclasses.fields(schema):
        if f.name.startswith("_"):
            continue
        name = f"{prefix}{f.name}"
        annotation = hints[f.name]
        inner = _unwrap(annotation)
        if dataclasses.is_dataclass(inner) and isinstance(inner, type):
            keys.update(schema_keys(inner, f"{name}."))
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "???"
        if isinstance(default, enum.Enum):
            default = default.name
        choices: tuple[str, ...] = ()
        if isinstance(inner, type) and issubclass(inner, enum.Enum):
            choices = tuple(inner.__members__)
        elif inner is bool:
            choices = ("true", "false")
        bounds = ", ".join(f"{_BOUND_SIGNS[b]} {v:g}" for b, v in f.metadata.items())
        kind = "enum" if choices and inner is not bool else _type_text(annotation)
        keys[name] = Key(name, default, kind, bounds, choices, comments.get(f.name, ""))
    return keys


def _schema(group: str, data: dict[str, Any]) -> type | None:
    from mlcli.config.schemas import SCHEMAS

    for entry in data.get("defaults") or []:
        match = _SCHEMA_REF.match(str(entry)) if isinstance(entry, str) else None
        if match and match["group"] == group:
            return SCHEMAS.get(group, {}).get(match["name"])
    if group == "analysis":  # typed once at the top (options combine), not in each file
        return SCHEMAS["analysis"]["base"]
    return None


def read_option(group: str, path: Path) -> Option:
    """One option file: header comment, keys (the file's and its schema's), defaults."""
    text = path.read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        data = {}
    schema = _schema(group, data)
    typed = schema_keys(schema) if schema is not None else {}
    comments = _comments(text)
    values = {
        k: v
        for k, v in _flatten({k: v for k, v in data.items() if k != "defaults"}).items()
        if not k.rsplit(".", 1)[-1].startswith("_")
    }
    names = list(values) + [k for k in typed if k not in values and group != "analysis"]
    keys = []
    for name in names:
        known = typed.get(name, Key(name, None))
        default = values.get(name, known.default)
        comment = comments.get(name) or known.comment
        keys.append(dataclasses.replace(known, default=default, comment=comment))
    return Option(group, path.stem, path, _header(text), keys, schema)


def options(group: str, config_dir: str | None = None) -> list[Option]:
    """Every option of ``group``, a user's config dir first (its file replaces mlcli's)."""
    found: dict[str, Path] = {}
    for directory in search_dirs(config_dir):
        group_dir = directory / group
        if group_dir.is_dir():
            for path in sorted(group_dir.glob("*.yaml")):
                found.setdefault(path.stem, path)
    return [read_option(group, found[name]) for name in sorted(found)]


def option(group: str, name: str, config_dir: str | None = None) -> Option | None:
    """One option of ``group`` by name (``None`` if there is no such file)."""
    for directory in search_dirs(config_dir):
        path = directory / group / f"{name}.yaml"
        if path.is_file():
            return read_option(group, path)
    return None


@functools.cache
def _primary() -> tuple[str, dict[str, Any]]:
    path = packaged_conf_dir() / f"{CONFIG_NAME}.yaml"
    text = path.read_text(encoding="utf-8")
    return text, yaml.safe_load(text)


def default_choices() -> dict[str, str]:
    """Each group's default option, from the defaults list of ``conf/config.yaml``."""
    choices = {}
    for entry in _primary()[1].get("defaults", []):
        if isinstance(entry, dict):
            choices.update({str(k): str(v) for k, v in entry.items()})
    return {group: choices[group] for group in GROUPS if group in choices}


def run_settings() -> list[Key]:
    """The top-level run settings (``epochs``, ``seed`` ...): defaults, types and comments."""
    from mlcli.config.schemas import RunSchema

    text, data = _primary()
    typed = schema_keys(RunSchema)
    comments = _comments(text)
    settings = []
    for f in dataclasses.fields(RunSchema):
        if f.name in GROUPS or f.name not in typed:
            continue
        known = typed[f.name]
        default = data.get(f.name, known.default)
        comment = comments.get(f.name) or known.comment
        settings.append(dataclasses.replace(known, default=default, comment=comment))
    return settings


def hydra_options(group: str) -> list[str]:
    """The installed options of a Hydra group (``hydra/launcher``), found without importing
    Hydra or any plug-in: Hydra's core plug-ins (``basic``), mlcli's option files in
    ``conf/hydra/...``, and the ``ConfigStore...store(group=..., name=...)`` calls in the
    installed ``hydra_plugins`` packages. A test checks it against Hydra's own answer."""
    names = {"basic"}
    names.update(p.stem for p in (packaged_conf_dir() / group).glob("*.yaml"))
    spec = importlib.util.find_spec("hydra_plugins")
    for location in (spec.submodule_search_locations or []) if spec else []:
        for source in Path(location).glob("*/*.py"):
            try:
                text = source.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            names.update(m["name"] for m in _STORE_CALL.finditer(text) if m["group"] == group)
    return sorted(names)


def value_text(value: Any) -> str:
    """A default as it would be typed on the command line (``null``, ``true``, ``[128]``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | dict):
        return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return str(value)
