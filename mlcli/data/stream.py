"""Pictures read from disk per batch (``dataset=images`` with ``cache=none``).

A fold's :class:`FoldStream` holds a ``torch.utils.data.DataLoader`` per split over the fold's
files (``num_workers`` decoding processes, persistent across epochs; page-locked batches copied
without blocking when training on a GPU). The workers only decode: the batch order comes from the
fold's own generator (the same permutation the in-memory path draws), and augmentation and
normalization run in the training process, so a run gives the same numbers whatever
``num_workers`` is. The normalization statistics are fitted on the fold's training pictures in
one pass before its first epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from mlcli.data.errors import DataError
from mlcli.data.images import PictureFiles, decode

Batch = tuple[torch.Tensor, torch.Tensor]


class Pictures(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """Rows ``index`` of a picture dataset, decoded on demand (a map-style torch dataset)."""

    def __init__(self, source: PictureFiles, y: np.ndarray) -> None:
        self.source = source
        self.y = y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, row: int) -> tuple[torch.Tensor, int]:
        path = self.source.files[row]
        try:
            pixels = decode(path, self.source.channels, self.source.size)
        except (OSError, ValueError, SyntaxError) as error:
            raise DataError(
                path, f"could not be decoded ({error})", fix="remove or replace it"
            ) from None
        return torch.from_numpy(pixels), int(self.y[row])


class Order(Sampler[int]):
    """The rows of one epoch, in the order set before the epoch starts."""

    def __init__(self, rows: Sequence[int] | np.ndarray) -> None:
        self.rows: list[int] = [int(r) for r in rows]

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.rows))

    def __len__(self) -> int:
        return len(self.rows)


def _seed_worker(worker: int) -> None:
    # Decoding draws no random numbers; seeded all the same, so that a user's transform in a
    # worker repeats too (torch seeds each worker from the loader's generator).
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    import random

    random.seed(seed)


class FoldStream:
    """One fold's loaders (train, val, test) over the files of a picture dataset."""

    def __init__(
        self,
        source: PictureFiles,
        y: np.ndarray,
        rows: dict[str, np.ndarray],
        batch_size: int,
        device: torch.device,
        seed: int,
    ) -> None:
        self.source = source
        self.device = device
        self.rows = rows
        self.order = Order(rows["train"])
        self.pin = bool(source.pin_memory) and device.type == "cuda"
        self.loaders: dict[str, DataLoader[Any]] = {}
        self.normalize: Callable[[torch.Tensor], torch.Tensor] = lambda x: x
        # The fitted statistics as :func:`mlcli.data.preprocess.apply_preprocess` reads them
        # (what predicting needs): none until fit_normalizer has fitted them.
        self.state: dict[str, Any] = {"kind": "none"}
        workers = int(source.num_workers)
        for split, index in rows.items():
            if split != "train" and not len(index):
                continue
            sampler = self.order if split == "train" else Order(index)
            self.loaders[split] = DataLoader(
                Pictures(source, y),
                batch_size=batch_size,
                sampler=sampler,
                num_workers=workers,
                pin_memory=self.pin,
                persistent_workers=workers > 0,
                worker_init_fn=_seed_worker if workers > 0 else None,
                generator=torch.Generator().manual_seed(seed),
            )

    @property
    def in_shape(self) -> tuple[int, ...]:
        """One decoded picture's shape."""
        return (int(self.source.channels), *(int(d) for d in self.source.size))

    def n(self, split: str) -> int:
        """Rows in ``split``."""
        return len(self.rows.get(split, ()))

    def fit_normalizer(self, kind: str) -> None:
        """Fit the fold's normalization on its training pictures (one pass, float64 sums)."""
        if kind == "none":
            return
        total = count = squares = low = high = None
        for x, _ in self.batches("train", range(self.n("train")), normalize=False):
            x64 = x.double()
            dims = (0, 2, 3) if kind == "channel" else (0,)
            part, sq = x64.sum(dims), (x64 * x64).sum(dims)
            n = x64.numel() // part.numel()  # the values each statistic sums over
            total = part if total is None else total + part
            squares = sq if squares is None else squares + sq
            count = n if count is None else count + n
            lo, hi = x64.amin(dims), x64.amax(dims)
            low = lo if low is None else torch.minimum(low, lo)
            high = hi if high is None else torch.maximum(high, hi)
        assert total is not None and squares is not None and count and low is not None
        assert high is not None
        if kind == "minmax":
            shift, scale = low, high - low
        else:
            shift = total / count
            scale = (squares / count - shift * shift).clamp_min(0).sqrt()
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        if kind == "channel":
            shift, scale = shift[:, None, None], scale[:, None, None]
        shift_t, scale_t = shift.float().to(self.device), scale.float().to(self.device)
        self.state = {"kind": "normalize", "shift": shift.float().numpy(),
                      "scale": scale.float().numpy()}  # fmt: skip
        self.normalize = lambda x: (x - shift_t) / scale_t

    def batches(
        self, split: str, order: Sequence[int] | None = None, normalize: bool = True
    ) -> Iterator[Batch]:
        """``split``'s batches on the device; ``order``: this epoch's order of the training rows,
        as positions among them (the permutation the in-memory path indexes its tensors with)."""
        if split not in self.loaders:
            return
        if order is not None and split == "train":
            train = self.rows["train"]
            self.order.rows = [int(train[position]) for position in order]
        for x, y in self.loaders[split]:
            x = x.to(self.device, non_blocking=self.pin)
            y = y.to(self.device, non_blocking=self.pin)
            yield (self.normalize(x) if normalize else x), y
