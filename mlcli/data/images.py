"""Folders of pictures (``dataset=images``): labelled by subfolder or by a file-name prefix.

Two layouts are read (``labels``):

- ``folder``: torchvision's ImageFolder layout, ``DIR/<class>/<any name>.png`` (class folders may
  nest further folders of pictures);
- ``prefix``: the label is the file name's prefix before the first ``_``, ``DIR/3_123.jpg`` ->
  class ``3`` (the course's image homework);
- ``auto``: ``folder`` when ``DIR`` holds class folders and no pictures of its own, else
  ``prefix``.

Class names sort as numbers when they all are numbers (``2`` before ``10``), so a homework's
class ``3`` is index 3 when classes 0..K-1 are all present. Pictures are decoded with Pillow,
converted to RGB (``channels=3``) or grayscale (``channels=1``) and centre-cropped to ``size``'s
aspect ratio then resized to it (bilinear, as torchvision's ``Resize``).

``cache`` decides where decoded pictures live: ``memory`` decodes every picture once into the
dataset's ``X`` (``N×C×H×W`` float32 in [0, 1]: the in-memory path of every other dataset,
stacked folds included); ``none`` keeps only the file list and the loader reads the pictures of
every batch (``mlcli.data.stream``); ``auto`` is ``memory`` when the decoded set fits in
``cache_max_mb``. Either way every file is opened before training starts: a file that is not a
readable picture stops the command (exit 2, naming it) unless ``skip_bad=true``, which skips and
lists it. No torch import here: the preflight builds every dataset of a command.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlcli.config import enum_name
from mlcli.data.base import Dataset
from mlcli.data.errors import DataError

EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".ppm", ".tif", ".tiff", ".webp")
"""File endings read as pictures (case-insensitive); other files are ignored."""

MODES = {1: "L", 3: "RGB"}
LISTED_BAD = 10


@dataclass(frozen=True)
class PictureFiles:
    """A dataset's pictures on disk, read when a batch needs them (``cache=none``).

    ``files[i]`` is row ``i`` of the dataset (its ``y[i]``); every picture decodes to
    ``(channels, *size)`` float32 in [0, 1]. ``num_workers``, ``pin_memory`` configure the
    loader."""

    files: tuple[str, ...]
    channels: int
    size: tuple[int, int]
    num_workers: int = 0
    pin_memory: bool = True


def picture_size(size: int | Sequence[int], channels: int = 3) -> tuple[int, int]:
    """``size`` as ``(height, width)``: one number is a square (``channels`` checked too)."""
    if channels not in MODES:
        raise DataError(
            "dataset.channels", f"channels must be 1 or 3, got {channels}", key="dataset.channels"
        )
    if isinstance(size, int):
        return (size, size)
    values = [int(v) for v in size]
    if len(values) == 1:
        return (values[0], values[0])
    if len(values) != 2 or min(values) < 1:
        raise DataError(
            "dataset.size",
            f"size must be one number or [height, width], got {list(size)}",
            fix="e.g. dataset.size=64 or 'dataset.size=[48,64]'",
            key="dataset.size",
        )
    return (values[0], values[1])


def decode(path: str, channels: int, size: tuple[int, int]) -> np.ndarray:
    """One picture as ``(channels, height, width)`` float32 in [0, 1] (``OSError``/``ValueError``
    from Pillow when it is not a readable picture)."""
    from PIL import Image

    with Image.open(path) as picture:
        picture.load()
        converted = picture.convert(MODES[channels])
    # ImageOps.fit's centred crop of the output's aspect ratio, resized bilinearly (as
    # torchvision's Resize) with Pillow's reducing_gap: a large picture is first shrunk by an
    # integer factor (box averaging), several times faster than resampling it all at once.
    width, height = converted.size
    ratio = size[1] / size[0]
    crop_w, crop_h = (height * ratio, height) if width / height >= ratio else (width, width / ratio)
    left, top = (width - crop_w) / 2, (height - crop_h) / 2
    fitted = converted.resize(
        (size[1], size[0]),
        Image.Resampling.BILINEAR,
        box=(left, top, left + crop_w, top + crop_h),
        reducing_gap=2.0,
    )
    pixels = np.asarray(fitted, dtype=np.float32) / 255.0
    return pixels[None] if channels == 1 else np.ascontiguousarray(pixels.transpose(2, 0, 1))


def readable(path: str) -> bool:
    """Whether ``path`` opens as a picture and its data passes Pillow's check (no decoding)."""
    from PIL import Image

    try:
        with Image.open(path) as picture:
            picture.verify()
    except (OSError, ValueError, SyntaxError):  # PIL raises SyntaxError for some broken headers
        return False
    return True


def _pictures(folder: Path) -> list[Path]:
    """Picture files under ``folder`` (recursively), in a stable order; hidden files skipped."""
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [
            Path(root, n)
            for n in sorted(names)
            if not n.startswith(".") and n.lower().endswith(EXTENSIONS)
        ]
    return found


def _sorted_names(names: set[str]) -> list[str]:
    if all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


def list_labelled(folder: Path, labels: str, key: str) -> tuple[list[Path], list[str], str]:
    """The pictures of ``folder`` and each one's class name, by ``labels`` (folder | prefix |
    auto); returns the layout used."""
    if not folder.is_dir():
        raise DataError(
            str(folder), "is not a folder", fix=f"point {key} at a folder of pictures", key=key
        )
    top = [
        p for p in sorted(folder.iterdir()) if p.is_file() and p.name.lower().endswith(EXTENSIONS)
    ]
    subfolders = [p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    if labels == "auto":
        labels = "folder" if subfolders and not top else "prefix"
    if labels == "folder":
        files, names = [], []
        for sub in subfolders:
            inside = _pictures(sub)
            files += inside
            names += [sub.name] * len(inside)
    else:
        files = [p for p in top if not p.name.startswith(".")]
        unlabelled = [p.name for p in files if "_" not in p.stem or not p.stem.split("_", 1)[0]]
        if unlabelled:
            raise DataError(
                str(folder),
                f"{len(unlabelled)} pictures have no '<class>_' prefix in their name "
                f"(first: {unlabelled[0]!r})",
                fix="name them <class>_<anything>.<ext>, or use class folders "
                "(dataset.labels=folder)",
                key=key,
            )
        names = [p.stem.split("_", 1)[0] for p in files]
    if not files:
        raise DataError(
            str(folder),
            f"holds no pictures ({', '.join(EXTENSIONS)}) for labels={labels}",
            fix="check the path, or dataset.labels=folder|prefix",
            key=key,
        )
    return files, names, labels


def _check_files(
    files: list[Path], keep: np.ndarray, skip_bad: bool, key: str, check: Any
) -> list[str]:
    """Run ``check(path) -> bool`` on each file; a bad one raises unless ``skip_bad`` (then it is
    marked in ``keep`` and listed)."""
    bad = []
    for i, path in enumerate(files):
        if not check(str(path)):
            if not skip_bad:
                raise DataError(
                    str(path),
                    "is not a readable picture",
                    fix="remove or replace it, or skip unreadable files with dataset.skip_bad=true",
                    key=key,
                )
            keep[i] = False
            bad.append(str(path))
    return bad


def _class_indices(
    names: list[str], n_train: int, test_path: str | None
) -> tuple[list[str], np.ndarray]:
    """The classes (of the first ``n_train`` rows: the training pictures) and each row's index;
    a test picture of a class the training pictures lack is an error."""
    class_names = _sorted_names(set(names[:n_train]))
    index = {name: i for i, name in enumerate(class_names)}
    unknown = sorted(set(names[n_train:]) - set(index))
    if unknown:
        raise DataError(
            str(test_path),
            f"classes {unknown} are not among the training classes {class_names}",
            key="dataset.test_path",
        )
    return class_names, np.array([index[n] for n in names], dtype=np.int64)


def images(
    path: str,
    labels: str = "auto",
    channels: int = 3,
    size: int | Sequence[int] = 64,
    test_path: str | None = None,
    skip_bad: bool = False,
    cache: str = "auto",
    cache_max_mb: float = 2048.0,
    num_workers: int = 0,
    pin_memory: bool = True,
) -> Dataset:
    """A folder of pictures as a classification dataset (see the module docstring).

    ``test_path``: a second folder, labelled the same way, held out as the test split (an
    unlabelled folder cannot be one). The class names and counts, the layout read and
    any skipped files are in the dataset's notes; ``meta["files"]`` lists each row's file.
    """
    labels, cache = enum_name(labels), enum_name(cache)
    hw = picture_size(size, channels)
    root = Path(path).expanduser()
    files, names, layout = list_labelled(root, labels, "dataset.path")
    n_train = len(files)
    if test_path:
        test_files, test_names, _ = list_labelled(
            Path(test_path).expanduser(), layout, "dataset.test_path"
        )
        files, names = files + test_files, names + test_names
    decoded_mb = len(files) * channels * hw[0] * hw[1] * 4 / 2**20
    in_memory = cache == "memory" or (cache == "auto" and decoded_mb <= cache_max_mb)
    keep = np.ones(len(files), dtype=bool)
    pixels: list[np.ndarray] = []

    def decodes(file: str) -> bool:
        try:
            pixels.append(decode(file, channels, hw))
        except (OSError, ValueError, SyntaxError):
            return False
        return True

    bad = _check_files(files, keep, skip_bad, "dataset.path", decodes if in_memory else readable)
    kept = [f for f, k in zip(files, keep, strict=True) if k]
    kept_names = [n for n, k in zip(names, keep, strict=True) if k]
    n_train_kept = int(keep[:n_train].sum())
    class_names, y = _class_indices(kept_names, n_train_kept, test_path)
    counts = Counter(kept_names[:n_train_kept])
    notes = [
        f"pictures: {n_train_kept} in {len(class_names)} classes (labels by {layout}), "
        f"{channels}×{hw[0]}×{hw[1]}, "
        + ("decoded into memory" if in_memory else "read from disk every epoch")
        + f" ({decoded_mb:.0f} MB decoded)",
        "classes: " + ", ".join(f"{name} ({counts[name]})" for name in class_names),
    ]
    if test_path:
        notes.append(f"test split: {test_path} ({len(kept) - n_train_kept} pictures)")
    if bad:
        shown = ", ".join(bad[:LISTED_BAD]) + (" ..." if len(bad) > LISTED_BAD else "")
        notes.append(f"skipped {len(bad)} unreadable files (dataset.skip_bad=true): {shown}")
    if in_memory:
        X = np.stack(pixels) if pixels else np.zeros((0, channels, *hw), np.float32)
        source = None
    else:
        X = np.zeros((len(kept), 0), dtype=np.float32)  # the pictures stay on disk: see meta
        source = PictureFiles(
            tuple(str(f) for f in kept), channels, hw, int(num_workers), bool(pin_memory)
        )
    return Dataset(
        name=root.name or "images",
        X=X,
        y=y,
        task="classification",
        class_names=class_names,
        test_index=np.arange(n_train_kept, len(kept)) if test_path else None,
        source=str(root),
        # predict writes Id,Category (the course homework's submission columns)
        meta={"files": [str(f) for f in kept], "target_base": "Category"},
        notes=notes,
        pictures=source,
    )


def picture_schema(node: Any, dataset: Dataset, augment: Any) -> dict[str, Any] | None:
    """What ``mlcli predict`` needs to read a folder of new pictures as the run read its own
    (None: the run's data are not pictures): the channels and size, and the run's training
    augmentation (``augment``, a plain dict) for ``--tta``."""
    if str(node.get("_target_")) != "mlcli.data.images":
        return None
    channels, height, width = (int(d) for d in dataset.in_shape)
    return {"channels": channels, "size": [height, width], "augment": augment}


def folder_pictures(
    folder: Path, channels: int, size: tuple[int, int], key: str
) -> tuple[list[Path], np.ndarray]:
    """Every picture under ``folder`` (recursively, labelled or not) decoded as the run's were:
    ``(N, channels, *size)`` float32 in [0, 1]. A folder without pictures, or a file that is
    not a readable picture, raises :class:`DataError` naming it."""
    if not folder.is_dir():
        raise DataError(
            str(folder), "is not a folder", fix=f"point {key} at a folder of pictures", key=key
        )
    files = _pictures(folder)
    if not files:
        raise DataError(
            str(folder),
            f"holds no pictures ({', '.join(EXTENSIONS)})",
            fix=f"check the path given to {key}",
            key=key,
        )
    pixels = np.empty((len(files), channels, *size), dtype=np.float32)
    for i, file in enumerate(files):
        try:
            pixels[i] = decode(str(file), channels, size)
        except (OSError, ValueError, SyntaxError):
            raise DataError(
                str(file),
                "is not a readable picture",
                fix="remove or replace it, then predict again",
                key=key,
            ) from None
    return files, pixels


def picture_rows(dataset: Dataset, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` of a picture dataset as ``(N, C, H, W)`` pixels: its decoded ``X``, or,
    for pictures kept on disk (``cache=none``), those rows' files decoded now."""
    source = dataset.pictures
    if source is None:
        return dataset.X[rows]
    out = np.empty((len(rows), source.channels, *source.size), dtype=np.float32)
    for i, row in enumerate(np.asarray(rows).tolist()):
        out[i] = decode(source.files[row], source.channels, source.size)
    return out
