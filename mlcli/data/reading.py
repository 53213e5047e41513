"""Read a CSV file into text cells, knowing the line each row starts on.

Python's ``csv`` module parses (it reports the line of every record, so short and long rows,
quoted newlines and blank lines are all accounted for); each column is then held as a numpy
string array, so the checks that follow (missing cells, numbers) are vectorized. The header is
line 1.
"""

from __future__ import annotations

import csv as csv_module
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlcli.config import did_you_mean
from mlcli.data.errors import DataError


def plain(value: Any) -> str:
    """The plain name of a config enum value (``Missing.drop`` -> ``drop``) or a string."""
    return str(getattr(value, "name", value))


def as_names(values: Sequence[Any] | None) -> list[str] | None:
    """A config list (``ListConfig``) as plain strings; ``None`` stays ``None``."""
    return None if values is None else [str(v) for v in values]


def listing(names: Sequence[str], limit: int = 12) -> str:
    """``a, b, c`` (at most ``limit`` names, then how many there are in all)."""
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def existing_file(path: str, key: str) -> Path:
    """``path`` as a :class:`Path`, or a :class:`DataError` when there is no such file."""
    file = Path(path).expanduser()
    if file.is_file():
        return file
    problem = "is a directory, not a file" if file.is_dir() else "no such file"
    raise DataError(
        path,
        f"{problem} (looked in {file.resolve().parent})",
        fix=f"Check {key} (a relative path starts at the directory you run mlcli in)",
        key=key,
    )


@dataclass
class Table:
    """A CSV file's cells as text (stripped), one numpy string array a column, with the line
    each row starts on."""

    where: str
    key: str
    columns: list[str]
    cells: dict[str, np.ndarray]
    lines: np.ndarray
    header_line: int
    sha256: str
    renamed: list[str] = field(default_factory=list)
    """Columns renamed because the header repeats a name (``cli.1``)."""

    def __getitem__(self, column: str) -> np.ndarray:
        return self.cells[column]

    def subset(self, keep: np.ndarray) -> Table:
        """The rows where ``keep`` is true."""
        return Table(
            self.where,
            self.key,
            self.columns,
            {name: cells[keep] for name, cells in self.cells.items()},
            self.lines[keep],
            self.header_line,
            self.sha256,
            self.renamed,
        )

    def column(self, name: str, role: str = "", key: str | None = None) -> str:
        """``name`` if the header has it, else a :class:`DataError` with a did-you-mean.

        ``key`` is the setting that named the column (default: this file's path key).
        """
        if name in self.columns:
            return name
        raise DataError(
            self.where,
            f"the header (line {self.header_line}) has no {role}column {name!r}"
            f".{did_you_mean(name, self.columns)}",
            column=name,
            line=self.header_line,
            fix=f"Columns: {listing(self.columns, 30)}",
            key=key or self.key,
        )


def read_table(path: str, sep: str = ",", key: str = "dataset.path") -> Table:
    """Read a CSV file with a header line into text cells; every row has the header's width.

    ``sep`` is one character; ``tab`` (or ``\\t`` as typed on a command line) means a tab.
    """
    sep = {"tab": "\t", "\\t": "\t"}.get(sep, sep)
    if len(sep) != 1:
        raise DataError(
            path,
            f"dataset.sep={sep!r} is not one character",
            fix="Use e.g. dataset.sep=';' or dataset.sep=tab",
            key="dataset.sep",
        )
    file = existing_file(path, key)
    raw = file.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark (spreadsheet exports) is not a column
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DataError(
            path,
            f"is not UTF-8 text (first undecodable byte on line {line})",
            line=line,
            fix='Save it as UTF-8 ("CSV UTF-8" in spreadsheet programs)',
            key=key,
        ) from None
    quoted = '"' in text
    header, header_line, records, lines = (
        _quoted_records(path, key, text, sep) if quoted else _plain_lines(text, sep)
    )
    if header is None:
        raise DataError(path, "is empty (no header line)", fix="The first line names the columns")
    columns, renamed = dedupe_names([name or f"Unnamed: {i}" for i, name in enumerate(header)])
    if not records:
        raise DataError(path, "has a header but no data rows", line=header_line, key=key)
    _check_widths(path, key, sep, columns, records, lines, quoted)
    if quoted:
        cells = {
            name: strip_text(np.array(column, dtype=TEXT))
            for name, column in zip(columns, zip(*records, strict=True), strict=True)
        }
    else:
        cells = _parse_plain(records, sep, columns)  # type: ignore[arg-type]
    return Table(
        path,
        key,
        columns,
        cells,
        np.asarray(lines, dtype=np.int64),
        header_line,
        hashlib.sha256(raw).hexdigest(),
        renamed,
    )


def dedupe_names(names: list[str]) -> tuple[list[str], list[str]]:
    """Repeated column names made distinct as ``pandas.read_csv`` makes them (``cli, cli`` ->
    ``cli, cli.1``, skipping a name the header has already: a file that repeats a day's
    columns), and the new names given."""
    header = set(names)
    counts: dict[str, int] = {}
    out: list[str] = []
    renamed: list[str] = []
    for original in names:
        name, count = original, counts.get(original, 0)
        while count > 0:  # pandas' rule: the next ``name.k`` that is not taken
            counts[original] = count + 1
            name = f"{original}.{count}"
            count = count + 1 if name in header else counts.get(name, 0)
        counts[name] = count + 1
        if name != original:
            renamed.append(name)
        out.append(name)
    return out, renamed


def _check_widths(
    path: str,
    key: str,
    sep: str,
    columns: list[str],
    records: list[Any],
    lines: list[int],
    quoted: bool,
) -> None:
    """Every row has one field per column of the header (else: which rows, where, how to fix)."""
    if quoted:
        widths = np.fromiter((len(r) for r in records), dtype=np.int64, count=len(records))
    else:  # without quotes, a line's fields are its separators plus one
        widths = np.fromiter((r.count(sep) + 1 for r in records), np.int64, len(records))
    wrong = np.flatnonzero(widths != len(columns))
    if not wrong.size:
        return
    first = int(wrong[0])
    width = int(widths[first])
    if width < len(columns):
        column: str | None = columns[width]
        detail = f"{width} fields, column {columns[width]!r} onwards missing"
    else:
        column = None
        detail = f"{width} fields, an extra field after the last column {columns[-1]!r}"
    raise DataError(
        path,
        f"{wrong.size} {'row has' if wrong.size == 1 else 'rows have'} a different number of "
        f"fields than the header's {len(columns)} (first at line {lines[first]}: {detail})",
        column=column,
        n_bad=int(wrong.size),
        line=lines[first],
        fix=f"Every row needs one value per column; quote values that contain {sep!r}",
        key=key,
    )


TEXT = np.dtypes.StringDType()
"""numpy's variable-width strings: vectorized strip, compare and float parsing."""


def strip_text(cells: np.ndarray) -> np.ndarray:
    """Cells without surrounding spaces: " 3.5" is 3.5, " red" is "red"."""
    return np.strings.strip(cells)


def as_text(cells: np.ndarray) -> np.ndarray:
    """A column as text, whether it was read as numbers or as strings."""
    if cells.dtype.kind in "iuf":
        return np.array([str(v) for v in cells.tolist()], dtype=TEXT)
    return cells


def _quoted_records(
    path: str, key: str, text: str, sep: str
) -> tuple[list[str] | None, int, list[list[str]], list[int]]:
    """(header, its line, records, each record's first line) with Python's csv module, which
    follows quoted separators and newlines."""
    reader = csv_module.reader(io.StringIO(text, newline=""), delimiter=sep)
    header: list[str] | None = None
    header_line = 1
    records: list[list[str]] = []
    lines: list[int] = []
    blanks: list[bool] = []
    previous = 0
    try:
        for record in reader:
            start, previous = previous + 1, reader.line_num
            blank = not record or (len(record) == 1 and not record[0].strip())
            if header is None:
                if not blank:
                    header, header_line = [name.strip() for name in record], start
                continue
            # A blank line between rows is skipped, except in a one-column file (a series),
            # where it is an empty cell: a gap must not vanish silently.
            if blank and len(header) > 1:
                continue
            records.append([""] if blank else record)
            lines.append(start)
            blanks.append(blank)
    except csv_module.Error as error:
        raise DataError(
            path, f"line {reader.line_num}: {error}", line=reader.line_num, key=key
        ) from None
    while blanks and blanks[-1]:  # blank lines at the end of the file are not rows
        records.pop(), lines.pop(), blanks.pop()
    return header, header_line, records, lines


def _plain_lines(text: str, sep: str) -> tuple[list[str] | None, int, list[str], list[int]]:
    """The same as :func:`_quoted_records` for a file without quotes, where every line is a row:
    the rows stay lines of text (pandas parses their fields)."""
    header: list[str] | None = None
    header_line = 1
    rows: list[str] = []
    lines: list[int] = []
    blanks: list[bool] = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        blank = not line.strip()
        if header is None:
            if not blank:
                header, header_line = [name.strip() for name in line.split(sep)], number
            continue
        if blank and len(header) > 1:  # as in _quoted_records
            continue
        rows.append("" if blank else line)
        lines.append(number)
        blanks.append(blank)
    while blanks and blanks[-1]:
        rows.pop(), lines.pop(), blanks.pop()
    return header, header_line, rows, lines


def _parse_plain(rows: list[str], sep: str, columns: list[str]) -> dict[str, np.ndarray]:
    """Fields of unquoted rows with pandas' C parser: a column of clean numbers arrives as
    numbers; any other column (text, empty cells, NA markers, inf, true/false) as stripped text,
    exactly as written."""
    import pandas as pd

    body = ("\n".join(rows) + "\n").encode("utf-8")  # bytes: a StringIO would hold 4 bytes a char

    def read(as_text: list[str]) -> Any:
        return pd.read_csv(
            io.BytesIO(body),
            encoding="utf-8",
            sep=sep,
            header=None,
            names=columns,
            index_col=False,
            dtype=dict.fromkeys(as_text, str) or None,
            na_filter=False,
            keep_default_na=False,
            skip_blank_lines=False,
            quoting=csv_module.QUOTE_NONE,
            low_memory=False,
            engine="c",
        )

    def numbers(values: np.ndarray) -> bool:
        if values.dtype.kind in "iu":
            return True
        return values.dtype.kind == "f" and bool(np.isfinite(values).all())

    frame = read([])
    retry = [
        c for c in columns if frame[c].dtype.kind in "iufb" and not numbers(frame[c].to_numpy())
    ]
    if retry:  # inf, nan or true/false read as values: keep those columns' text as written
        frame = read(retry)
    cells = {}
    for name in columns:
        values = frame[name].to_numpy()
        if numbers(values) and name not in retry:
            cells[name] = values
        else:
            cells[name] = strip_text(np.asarray(values, dtype=object).astype(TEXT))
    return cells
