"""What identifies a run: the run key, a hash of its resolved config and of the data it reads.

The run key hashes the resolved config without what cannot change its results
(:data:`~mlcli.config.paths.NON_RESULT_KEYS`: paths, display, how folds are trained) and the
content of every data file its dataset names. Same key = same experiment.

A run key hashes the resolved config, which names a data file (``dataset.path=train.csv``) but
says nothing of what is in it: without its content an edited file would look like the same
experiment, and the re-run would be skipped. :func:`data_files` gives, for every string of the
dataset node that names a regular file (``path``, ``test_path``, a user builder's own file
arguments), the SHA-256 of its bytes; :func:`run_key` folds them into the key and
``status.json`` records them (``data_files``).

Each file is hashed once per process: the digest is cached by the file's ``(device, inode,
size, mtime_ns, ctime_ns)``, so the preflight, the sweep plan and every job forked from the
process (or run in it) share one read; an edit changes the stat, so it is read again. Light: no
torch, no pandas (the CLI's ``--dry-run`` uses it).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from typing import Any

from mlcli.config.paths import NON_RESULT_KEYS

DATA_FILES_KEY = "data_files"
"""Where the run key (and status.json) hold the data files' content hashes."""


def run_key(cfg: Any) -> str:
    """A stable hash of the resolved config, without keys that do not change results, and of the
    content of the data files its dataset names (:func:`data_files`): an
    edited data file makes another experiment. A dataset that names no file (mlcli's built-in
    sets) adds nothing."""
    from omegaconf import OmegaConf

    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    assert isinstance(container, dict)
    for key in (*NON_RESULT_KEYS, "hydra"):
        container.pop(key, None)
    # Settings that change nothing at their defaults leave the key as it was before them.
    if (container.get("early_stopping") or {}).get("patience") is None:
        container.pop("early_stopping", None)
    if container.get("final") == "none":
        container.pop("final", None)
    files = data_files(container.get("dataset"))
    if files:
        container[DATA_FILES_KEY] = files  # no config key has this name (the schema refuses it)
    text = json.dumps(container, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


_DIGESTS: dict[tuple[int, int, int, int, int], str] = {}
"""SHA-256 of the files hashed in this process, by their stat identity."""


def named_files(node: Any) -> list[str]:
    """The strings of a (resolved, plain-container) config node that name a regular file, in
    order, each once (FIFOs, devices and directories are never opened)."""
    found: list[str] = []
    for value in _strings(node):
        if value and value not in found and _regular(value) is not None:
            found.append(value)
    return found


def data_files(node: Any) -> dict[str, str]:
    """``{file: sha256}`` for every file the dataset node ``node`` names (a plain container or
    a DictConfig; ``{}`` when it names none, as mlcli's built-in datasets)."""
    if node is None:
        return {}
    if not isinstance(node, dict | list | str):
        from omegaconf import OmegaConf

        node = OmegaConf.to_container(node, resolve=True, enum_to_str=True)
    digests = {}
    for path in named_files(node):
        digest = file_sha256(path)
        if digest is not None:
            digests[path] = digest
    return digests


def file_sha256(path: str) -> str | None:
    """The SHA-256 of ``path``'s bytes, read once per process and stat (None: not a readable
    regular file)."""
    info = _regular(path)
    if info is None:
        return None
    identity = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    cached = _DIGESTS.get(identity)
    if cached is not None:
        return cached
    try:
        with open(path, "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                return None  # replaced by something else since the stat
            digest = hashlib.file_digest(file, "sha256").hexdigest()
    except OSError:
        return None
    _DIGESTS[identity] = digest
    return digest


def _regular(path: str) -> os.stat_result | None:
    try:
        info = os.stat(path)
    except (OSError, ValueError):  # ValueError: an embedded NUL byte
        return None
    return info if stat.S_ISREG(info.st_mode) else None


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return []
