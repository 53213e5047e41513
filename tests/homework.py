"""A seeded file shaped like the course's first homework (HW1): predict ``tested_positive`` of
day 3 from an ``id`` column, one-hot state columns and three days of survey columns whose
header repeats the same names for each day; a test file without the target, and its held
labels kept aside."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SURVEY = [
    "cli", "ili", "hh_cmnty_cli", "nohh_cmnty_cli", "wearing_mask", "travel_outside_state",
    "work_outside_home", "shop", "restaurant", "spent_time", "large_event", "public_transit",
    "anxious", "depressed", "felt_isolated", "worried_become_ill", "worried_finances",
]  # fmt: skip
STATES = ["AL", "AK", "AZ", "AR", "CA", "CO", "CT", "FL", "GA", "ID"]
DAY = [*SURVEY, "tested_positive"]


def write_homework(
    folder: Path, n_train: int = 1000, n_test: int = 300, seed: int = 0, noise: float = 1.0
) -> tuple[Path, Path, np.ndarray]:
    """``train.csv`` (with the day-3 target), ``test.csv`` (without it) in ``folder``, and the
    test rows' held labels. Each day's ``tested_positive`` is a linear function of that day's
    survey values and the state, plus noise."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    state = rng.integers(0, len(STATES), n)
    weights = rng.normal(size=len(SURVEY))
    state_effect = rng.normal(scale=2.0, size=len(STATES))
    base = rng.normal(size=(n, len(SURVEY)))
    blocks = []
    for day in range(3):
        survey = base + rng.normal(scale=0.3, size=base.shape) * (day + 1)
        positive = 10 + survey @ weights + state_effect[state] + rng.normal(scale=noise, size=n)
        blocks.append(np.column_stack([survey * 5 + 20, positive]))
    values = np.column_stack([np.eye(len(STATES))[state], *blocks])
    header = ["id", *STATES, *DAY, *DAY, *DAY]
    ids = np.arange(n)

    def write(path: Path, rows: slice, with_target: bool) -> None:
        width = len(header) if with_target else len(header) - 1
        lines = [",".join(header[:width])]
        for i in range(n)[rows]:
            cells = [str(ids[i]), *(f"{v:.6g}" for v in values[i, : width - 1])]
            lines.append(",".join(cells))
        path.write_text("\n".join(lines) + "\n")

    train, test = folder / "train.csv", folder / "test.csv"
    write(train, slice(0, n_train), True)
    write(test, slice(n_train, n), False)
    return train, test, values[n_train:, -1]
