"""A seeded folder of drawn shapes: 11 classes of pictures for the image datasets' tests and bench.

Each picture is one shape (circle, square, triangle, cross, ...) at a random position, size and
colour on a random background, drawn with Pillow's ImageDraw. Layouts: ``prefix``
(``DIR/<class>_<n>.png``, the course homework's naming), ``folder`` (``DIR/<class>/<n>.png``) and
``unlabelled`` (``DIR/<n>.png``, with the true classes in ``DIR/../labels.csv`` as ``Id,Category``).

    .venv/bin/python bench/shapes.py DIR [--per-class 110] [--size 64] [--layout prefix] [--seed 0]
        [--suffix png|jpg]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = (
    "circle", "square", "triangle", "cross", "ring", "diamond", "hbar", "vbar", "star", "x",
    "dots",
)  # fmt: skip


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return (int(rng.integers(0, 256)), int(rng.integers(0, 256)), int(rng.integers(0, 256)))


def draw(kind: int, size: int, rng: np.random.Generator) -> Image.Image:
    """One picture of shape ``kind`` (an index into :data:`SHAPES`)."""
    background = _colour(rng)
    picture = Image.new("RGB", (size, size), background)
    pen = ImageDraw.Draw(picture)
    colour = _colour(rng)
    # Keep the shape visible against the background: push its colour away when too close.
    if sum(abs(a - b) for a, b in zip(colour, background, strict=True)) < 200:
        colour = tuple(255 - c for c in background)  # type: ignore[assignment]
    r = float(rng.uniform(0.18, 0.32)) * size
    cx, cy = (float(rng.uniform(r + 1, size - r - 1)) for _ in range(2))
    w = max(2, int(r / 3))
    box = (cx - r, cy - r, cx + r, cy + r)
    name = SHAPES[kind]
    if name == "circle":
        pen.ellipse(box, fill=colour)
    elif name == "square":
        pen.rectangle(box, fill=colour)
    elif name == "triangle":
        pen.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    elif name == "cross":
        pen.rectangle((cx - r, cy - w, cx + r, cy + w), fill=colour)
        pen.rectangle((cx - w, cy - r, cx + w, cy + r), fill=colour)
    elif name == "ring":
        pen.ellipse(box, outline=colour, width=w)
    elif name == "diamond":
        pen.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=colour)
    elif name == "hbar":
        pen.rectangle((cx - r, cy - w, cx + r, cy + w), fill=colour)
    elif name == "vbar":
        pen.rectangle((cx - w, cy - r, cx + w, cy + r), fill=colour)
    elif name == "star":
        points = [
            (cx + (r if i % 2 == 0 else r / 2.5) * math.sin(i * math.pi / 5),
             cy - (r if i % 2 == 0 else r / 2.5) * math.cos(i * math.pi / 5))
            for i in range(10)
        ]  # fmt: skip
        pen.polygon(points, fill=colour)
    elif name == "x":
        pen.line((cx - r, cy - r, cx + r, cy + r), fill=colour, width=w)
        pen.line((cx - r, cy + r, cx + r, cy - r), fill=colour, width=w)
    else:  # dots: three small discs on a diagonal
        d = r / 3
        for k in (-1, 0, 1):
            x, y = cx + k * r * 0.7, cy + k * r * 0.7
            pen.ellipse((x - d, y - d, x + d, y + d), fill=colour)
    return picture


def make_folder(
    out: Path,
    per_class: int = 110,
    size: int = 64,
    layout: str = "prefix",
    seed: int = 0,
    n_classes: int = len(SHAPES),
    suffix: str = "png",
) -> list[tuple[str, int]]:
    """Write ``per_class`` pictures of each of ``n_classes`` shapes under ``out``; return each
    picture's (file stem, class), in the order written. ``suffix``: ``png`` (lossless) or
    ``jpg`` (JPEG at Pillow's quality 75, as photos come)."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    order = [(k, i) for k in range(n_classes) for i in range(per_class)]
    for n, (kind, i) in enumerate(order):
        picture = draw(kind, size, rng)
        if layout == "prefix":
            stem, target = f"{kind}_{i}", out / f"{kind}_{i}.{suffix}"
        elif layout == "folder":
            (out / str(kind)).mkdir(exist_ok=True)
            stem, target = str(i), out / str(kind) / f"{i}.{suffix}"
        else:  # unlabelled: names that say nothing of the class
            stem, target = f"{n:05d}", out / f"{n:05d}.{suffix}"
        picture.save(target)
        written.append((stem, kind))
    if layout == "unlabelled":
        lines = ["Id,Category", *(f"{stem},{kind}" for stem, kind in written)]
        (out.parent / "labels.csv").write_text("\n".join(lines) + "\n")
    return written


def main() -> None:
    """Command line: write one folder."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-class", type=int, default=110)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--layout", choices=("prefix", "folder", "unlabelled"), default="prefix")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classes", type=int, default=len(SHAPES))
    parser.add_argument("--suffix", choices=("png", "jpg"), default="png")
    args = parser.parse_args()
    written = make_folder(
        args.out, args.per_class, args.size, args.layout, args.seed, args.classes, args.suffix
    )
    print(f"{len(written)} pictures in {args.out}")


if __name__ == "__main__":
    main()
