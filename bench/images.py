"""Pictures per second of mlcli's training epoch against a plain torchvision loop, in one run.

The set: the drawn shapes of ``bench/shapes.py`` (11 classes × ``--per-class`` pictures in class
folders), drawn at ``--source-size`` pixels and trained at ``--size``: pictures on
disk are usually larger than the size a CNN trains at (photos), so every epoch of a streaming
loop decodes and shrinks them again; ``--source-size 64`` stores them at the training size. By
default they are JPEG files of 512 px, as photos come (a homework's photos are JPEGs some
hundreds of pixels a side); ``--suffix png --source-size 256`` writes smaller lossless files,
cheaper to decode.

The reference is the loop a practitioner writes:
``torchvision.datasets.ImageFolder`` (Pillow decoding, ``ToTensor``, ``Normalize``) and a
``DataLoader`` (shuffled, ``--workers`` processes, persistent), forward / loss / backward / Adam
step per batch. mlcli trains the same model (``cnn``, ``--channels``), batch size and workers
through its own code: ``fold_tensors`` then one epoch of ``fit`` (the epoch's validation on one
batch of pictures included), with the pictures

* ``mlcli, streaming``: read from disk per batch (``dataset.cache=none``), and
* ``mlcli, in memory``: decoded once before training (``dataset.cache=memory``).

Each case runs ``--repeats`` times after a warm-up, the cases interleaved round-robin so that
load from other processes hits them alike; the medians and the ratios to the reference are
printed. Targets: streaming >= 0.9 × the reference, in memory >= 2 × the reference. The last
case, the reference's loop over the decoded pictures as one tensor (no loader, no metrics), is
about the best any in-memory loop can do: where it is under 2 × the reference, decoding costs
the reference too little on that set for a cache to double it.

    .venv/bin/python bench/images.py [--per-class 110] [--source-size 512] [--suffix jpg|png]
        [--size 64] [--workers 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.shapes import make_folder
from mlcli.data.augment import torchvision
from mlcli.data.images import images
from mlcli.data.preprocess import fold_tensors
from mlcli.engine.loop import fit
from mlcli.models import cnn

TARGETS = {"mlcli, streaming": 0.9, "mlcli, in memory": 2.0}


def small_cnn(args: argparse.Namespace) -> torch.nn.Module:
    """The model both loops train: the ``--channels`` blocks exactly (no blocks added, maps
    flattened), a 64-unit head; small, so that the loops' data paths weigh in the timing."""
    return cnn((3, args.size, args.size), 11, channels=args.channels, hidden=[64], max_map_px=0,
               global_pool="off")  # fmt: skip


def reference_epoch(root: Path, args: argparse.Namespace) -> Callable[[], float]:
    """A plain ImageFolder + DataLoader epoch; returns a function that trains one epoch and
    returns its seconds."""
    tv = torchvision()
    from torchvision import transforms

    transform = transforms.Compose(
        [
            transforms.Resize(args.size),
            transforms.CenterCrop(args.size),
            transforms.ToTensor(),
            transforms.Normalize([0.5, 0.5, 0.5], [0.25, 0.25, 0.25]),
        ]
    )
    folder = tv.datasets.ImageFolder(str(root), transform=transform)
    loader = torch.utils.data.DataLoader(
        folder,
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
        generator=torch.Generator().manual_seed(0),
    )
    return plain_epoch(args, lambda: loader)


def tensor_epoch(root: Path, args: argparse.Namespace) -> Callable[[], float]:
    """About the best an in-memory loop does: the reference's loop over the decoded pictures as
    one tensor (no loader, no metrics, no validation)."""
    decoded = images(str(root), size=args.size, cache="memory")
    x, y = torch.as_tensor(decoded.X).float(), torch.as_tensor(decoded.y)
    generator = torch.Generator().manual_seed(0)

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(y), generator=generator)
        for first in range(0, len(y), args.batch_size):
            rows = order[first : first + args.batch_size]
            yield x[rows], y[rows]

    return plain_epoch(args, batches)


def plain_epoch(
    args: argparse.Namespace, batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]
) -> Callable[[], float]:
    """The hand-written epoch: forward / loss / backward / Adam step over ``batches()`` (a fresh
    model and optimizer per case); returns its seconds."""
    model = small_cnn(args)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def epoch() -> float:
        start = time.perf_counter()
        model.train()
        for x, y in batches():
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return time.perf_counter() - start

    return epoch


def mlcli_epoch(root: Path, args: argparse.Namespace, cache: str) -> Callable[[], float]:
    """One epoch of mlcli's ``fit`` over every picture (one batch of them as validation)."""
    from omegaconf import OmegaConf

    dataset = images(str(root), size=args.size, cache=cache, num_workers=args.workers)
    n = len(dataset.y)
    train, val = np.arange(n), np.arange(args.batch_size)
    node = OmegaConf.create({"normalize": "channel"})
    data = fold_tensors(
        dataset, train, val, np.arange(0), node, torch.device("cpu"), batch_size=args.batch_size
    )
    model = small_cnn(args)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    generator = torch.Generator().manual_seed(0)

    def epoch() -> float:
        start = time.perf_counter()
        fit(model, optimizer, scheduler, data, task="classification", epochs=1,
            batch_size=args.batch_size, generator=generator)  # fmt: skip
        return time.perf_counter() - start

    return epoch


def main() -> None:
    """Measure and print pictures per second and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-class", type=int, default=110)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--source-size", type=int, default=512)
    parser.add_argument("--suffix", choices=("png", "jpg"), default="jpg")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--channels", type=int, nargs="+", default=[8])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "shapes"
        make_folder(root, args.per_class, args.source_size, layout="folder", suffix=args.suffix)
        n = 11 * args.per_class
        cases = {
            "reference (ImageFolder + DataLoader)": reference_epoch(root, args),
            "mlcli, streaming": mlcli_epoch(root, args, "none"),
            "mlcli, in memory": mlcli_epoch(root, args, "memory"),
            "bare loop over a decoded tensor": tensor_epoch(root, args),
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        for epoch in cases.values():
            epoch()  # warm-up: workers started, first-call costs paid
        for _ in range(args.repeats):
            for name, epoch in cases.items():
                times[name].append(epoch())
    print(
        f"{n} {args.suffix.upper()} pictures of {args.source_size}x{args.source_size} px trained "
        f"at {args.size}x{args.size}, cnn channels={args.channels}, batch "
        f"{args.batch_size}, workers {args.workers}, 1 torch thread, median of {args.repeats}"
    )
    reference = n / statistics.median(times["reference (ImageFolder + DataLoader)"])
    for name, values in times.items():
        rate = n / statistics.median(values)
        target = TARGETS.get(name)
        verdict = "" if target is None else f"  (target >= {target}: "
        verdict += "" if target is None else ("met)" if rate / reference >= target else "MISSED)")
        print(f"{name:40s} {rate:8.0f} pictures/s  ratio {rate / reference:5.2f}{verdict}")


if __name__ == "__main__":
    main()
