"""The documentation as tests read it: pages, sections, shell examples, and the files they name."""

from __future__ import annotations

import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mlcli.data import textsamples
from tests.homework import write_homework

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
DATA = Path(__file__).resolve().parent / "data"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]

NOT_RUN = re.compile(r"^<!--\s*not run:(?P<reason>.*?)-->\s*$")
"""The marker just above a ``bash`` block that cannot run here, with the reason."""
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>\w*)\s*$")
EXIT_CODE = re.compile(r"exit code (?P<code>\d+)")


def page(name: str) -> str:
    """A page's text: ``"README.md"`` or a path below docs/ (``"guide/report.md"``)."""
    path = ROOT / name if name == "README.md" else DOCS / name
    return path.read_text(encoding="utf-8")


def section(text: str, heading: str) -> str:
    """The text below ``heading`` (a whole heading line) up to the next heading of its level."""
    level = heading.split(" ", 1)[0]
    body = text.split(f"\n{heading}\n", 1)[1] if not text.startswith(heading) else text
    return re.split(rf"\n{level} ", body, maxsplit=1)[0]


@dataclass(frozen=True)
class Block:
    """A fenced code block: its language, lines, the line it starts on, the not-run reason."""

    lang: str
    lines: tuple[str, ...]
    start: int
    not_run: str | None
    after: str
    """The language of the block right after this one (only blank lines between), or ``""``."""


def blocks(text: str) -> list[Block]:
    """Every fenced block of a page, in order."""
    found: list[dict] = []
    lines = text.splitlines()
    i = 0
    previous = ""  # the last non-blank line before the fence
    last_end = -10
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match and match["lang"]:
            indent, start = len(match["indent"]), i
            body = []
            i += 1
            while i < len(lines) and not FENCE.match(lines[i]):
                body.append(lines[i][indent:])
                i += 1
            marker = NOT_RUN.match(previous.strip())
            adjacent = found and all(not x.strip() for x in lines[last_end + 1 : start])
            if adjacent:
                found[-1]["after"] = match["lang"]
            found.append(
                {
                    "lang": match["lang"],
                    "lines": tuple(body),
                    "start": start + 1,
                    "not_run": marker["reason"].strip() if marker else None,
                    "after": "",
                }
            )
            last_end = i
        elif lines[i].strip():
            previous = lines[i]
        i += 1
    return [Block(**b) for b in found]


@dataclass(frozen=True)
class Command:
    """One shell command of a ``bash`` block (continuation lines joined)."""

    page: str
    line: int
    text: str
    not_run: str | None
    exit_code: int

    @property
    def args(self) -> list[str]:
        return shlex.split(self.text, comments=True)


def commands(path: Path) -> list[Command]:
    """Every command in the ``bash`` blocks of the page at ``path``."""
    name = str(path.relative_to(ROOT))
    found = []
    for block in blocks(path.read_text(encoding="utf-8")):
        if block.lang != "bash":
            continue
        pending, first = "", 0
        for offset, line in enumerate(block.lines):
            if not pending:
                first = block.start + 1 + offset
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            text = (pending + line).strip()
            pending = ""
            if not text or text.startswith("#"):
                continue
            comment = text.split(" #", 1)[1] if " #" in text else ""
            code = EXIT_CODE.search(comment)
            found.append(
                Command(name, first, text, block.not_run, int(code["code"]) if code else 0)
            )
    return found


def write_example_files(directory: Path) -> None:
    """The files the docs' examples name, shaped as their commands expect: the course's
    homework CSV as train.csv/test.csv, the first homework's layout as covid.train.csv/
    covid.test.csv, small CSVs with categories, groups and a time series, text files of each kind
    (and rows of each to predict), an npz of pictures, a folder of drawn-shape pictures (and an
    unlabelled one to predict, ``new/pictures``), a ``./conf`` model of one's own with its module,
    and copies of the shipped sweep (``tests/data/runs``, and in ``outputs/`` as a sweep and two
    runs)."""
    homework = (DATA / "homework.csv").read_text().splitlines(keepends=True)
    (directory / "train.csv").write_text("".join(homework[:121]))
    (directory / "test.csv").write_text("".join(homework[:1] + homework[121:]))
    rng = np.random.default_rng(0)
    area = rng.uniform(40, 160, 60).round(1)
    district = rng.choice(["north", "south", "east"], 60)
    price = (area * 3 + (district == "north") * 50 + rng.normal(0, 10, 60)).round(1)
    houses = pd.DataFrame({"area": area.astype(object), "district": district, "price": price})
    houses.loc[[4, 20], "area"] = ""
    houses.to_csv(directory / "houses.csv", index=False)
    visits = pd.DataFrame(
        {
            "patient": [f"p{i % 10}" for i in range(60)],
            "dose": rng.normal(size=60).round(3),
            "outcome": rng.integers(0, 2, 60),
        }
    )
    visits.to_csv(directory / "visits.csv", index=False)
    series = pd.DataFrame({"value": np.sin(np.arange(90) / 6).round(4)})
    series.to_csv(directory / "series.csv", index=False)
    np.savez(directory / "images.npz", X=rng.normal(size=(60, 1, 4, 4)), y=np.arange(60) % 3)
    from bench.shapes import make_folder

    make_folder(directory / "pictures", per_class=6, size=32)  # dataset.path=pictures
    make_folder(directory / "new" / "pictures", per_class=2, size=32, seed=1, layout="unlabelled")
    # The first homework's layout (repeated per-day header names, no target in the test file).
    hw1 = directory / "hw1"
    hw1.mkdir()
    train, test, _ = write_homework(hw1, n_train=200, n_test=50)
    train.rename(directory / "covid.train.csv")
    test.rename(directory / "covid.test.csv")
    hw1.rmdir()
    # Text of the three kinds, and other rows of each without their labels, tags or targets.
    for kind, name, new in (("reviews", "reviews.csv", "new_reviews.csv"),
                            ("conll", "train.conll", "new.conll"),
                            ("pairs", "pairs.csv", "new_pairs.csv")):  # fmt: skip
        textsamples.write(kind, directory / name, 60)
        textsamples.write(kind, directory / new, 20, seed=1, labels=False)


def write_example_config(directory: Path) -> None:
    """The ``yaml`` blocks of the docs that name their file (``# ./conf/model/tiny.yaml``) and the
    Hydra app of the Optuna page (``# ./my_app.py``), as written, and the module ``mypkg`` the
    model option names."""
    for path in PAGES:
        for block in blocks(path.read_text(encoding="utf-8")):
            named = block.lines and block.lines[0].startswith(("# ./conf/", "# ./my_app.py"))
            if block.lang in ("yaml", "python") and named:
                target = directory / block.lines[0][2:].strip()
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text("\n".join(block.lines) + "\n", encoding="utf-8")
    (directory / "mypkg.py").write_text(
        "import math\n\nimport torch\n\n\n"
        "def TinyNet(in_shape, out_features, width=8):\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(),\n"
        "        torch.nn.Linear(math.prod(in_shape), width), torch.nn.ReLU(),\n"
        "        torch.nn.Linear(width, out_features))\n",
        encoding="utf-8",
    )


def write_example_runs(directory: Path) -> None:
    """The shipped sweep, where the docs' report examples look for runs."""
    runs = DATA / "runs"
    shutil.copytree(runs, directory / "tests" / "data" / "runs")
    shutil.copytree(runs / "sweep", directory / "outputs" / "sweeps" / "2026-11-25_10-00-00-000000")
    for name in ("failed", "diverged"):
        shutil.copytree(runs / name, directory / "outputs" / "runs" / name)
