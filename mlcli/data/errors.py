"""Typed errors for bad data: each names the file, the column, the bad rows and how to fix it.

Builders raise :class:`DataError`; the preflight (``mlcli.data.loading.check_data``) turns it into
a config problem (one screen, exit code 2, nothing written) before any training starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class DataError(ValueError):
    """A data file (or data set) that mlcli cannot train on as configured.

    ``where`` is the file (or dataset name), ``column`` the column concerned, ``n_bad`` how many
    rows are bad and ``line`` the first bad line (the header is line 1). ``key`` is the config key
    a user would change to fix it (``dataset.path``, ``dataset.target``, ``cv.n_splits``...).
    """

    def __init__(
        self,
        where: str,
        problem: str,
        *,
        column: str | None = None,
        n_bad: int | None = None,
        line: int | None = None,
        fix: str = "",
        key: str = "dataset.path",
    ) -> None:
        self.where = str(where)
        self.problem = problem
        self.column = column
        self.n_bad = n_bad
        self.line = line
        self.fix = fix
        self.key = key
        place = self.where if column is None else f"{self.where}, column {column!r}"
        stop = "" if problem.endswith((".", "?", "!")) else "."
        super().__init__(f"{place}: {problem}" + (f"{stop} {fix}" if fix else ""))


def bad_rows(
    where: str,
    column: str | None,
    what: str,
    lines: Sequence[int] | np.ndarray,
    values: Sequence[Any] = (),
    *,
    fix: str = "",
    key: str = "dataset.path",
    unit: str = "line",
) -> DataError:
    """A :class:`DataError` for rows that break a rule: what, how many, and the first one.

    ``what`` names the problem (``"an empty or NA cell"``), as in "an empty or NA cell in 3 rows
    (first at line 7: '')".

    ``lines`` are the bad rows' line numbers (or array row indices with ``unit="row"``), in order;
    ``values`` the offending values in the same order (the first is quoted in the message).
    """
    n = len(lines)
    first = int(lines[0])
    shown = f": {values[0]!r}" if len(values) else ""
    plural = "row" if n == 1 else "rows"
    problem = f"{what} in {n} {plural} (first at {unit} {first}{shown})"
    return DataError(where, problem, column=column, n_bad=n, line=first, fix=fix, key=key)
