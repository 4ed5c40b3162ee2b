"""Parse a ratings file (any separator, header or not) block by block into typed columns.

A block that parses cleanly (the usual case) costs one pandas C-engine `read_csv`; only a block
with malformed lines is scanned line by line, vectorised with numpy, so each bad line comes
back as a `RowProblem` with its exact line number.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import pandas as pd

# Typed ratings columns of one block, by `RatingsSet.ratings` column name; int64/float32 (n,).
_Columns = dict[str, np.ndarray]

RATING_COLUMNS = ("user_id", "movie_id", "rating", "timestamp")
# Columns and dtypes of `RatingsSet.ratings`.
RATINGS_DTYPES = {
    "user_id": np.int64,
    "movie_id": np.int64,
    "rating": np.float32,
    "timestamp": np.int64,
    "line": np.int64,
}
_WHOLE_NUMBER_COLUMNS = ("user_id", "movie_id", "timestamp")

_BLOCK_BYTES = 64 << 20
# `::` is replaced by this byte so the C engine sees a one-byte separator; it never occurs in
# MovieLens text, and a stray one only changes that line's field count.
_DAT_SEPARATOR = b"\x1f"
_NEWLINE, _CR = ord("\n"), ord("\r")
_HEADER_ALIASES = {
    "userid": "user_id",
    "user": "user_id",
    "movieid": "movie_id",
    "itemid": "movie_id",
    "movie": "movie_id",
    "item": "movie_id",
    "rating": "rating",
    "timestamp": "timestamp",
}


@dataclass(frozen=True)
class RowProblem:
    """A ratings line that was left out of `RatingsSet.ratings`."""

    line: int  # 1-based line number in the ratings file
    reason: str  # e.g. "malformed: expected 4 fields, got 2", "rating 'x' is not a number"


def read_ratings(stream: BinaryIO, size: int, separator: bytes) -> tuple[pd.DataFrame, list[RowProblem]]:
    """The `RatingsSet.ratings` frame of a stream of `size` bytes, and the lines left out."""
    blocks = _line_blocks(stream, _BLOCK_BYTES)
    if separator == b"::":
        blocks = (block.replace(b"::", _DAT_SEPARATOR) for block in blocks)
        separator = _DAT_SEPARATOR
    first_block = next(blocks, b"").removeprefix(b"\xef\xbb\xbf")
    header_end = first_block.find(b"\n") + 1
    columns = _header_columns(first_block[:header_end], separator)
    next_line = 1
    if columns is None:
        columns = _columns_by_position(first_block, separator)
    else:
        first_block = first_block[header_end:]
        next_line = 2

    ratings = _RatingsBuffer(_expected_lines(first_block, size))
    problems = []
    for block in _chain_first(first_block, blocks):
        block_columns, block_problems = _parse_block(block, separator, columns, next_line)
        ratings.append(block_columns)
        problems.extend(block_problems)
        next_line += block.count(b"\n")
    return ratings.frame(), problems


def _expected_lines(sample: bytes, size: int) -> int:
    """About how many lines `size` bytes hold, judged by the lines of `sample`."""
    return int(size / max(len(sample), 1) * sample.count(b"\n") * 1.02) + 1


def _line_blocks(stream: BinaryIO, block_bytes: int) -> Iterator[bytes]:
    """The stream in pieces of about `block_bytes`, each ending with a newline (one is added)."""
    tail = b""
    while chunk := stream.read(block_bytes):
        chunk = tail + chunk
        cut = chunk.rfind(b"\n") + 1
        tail = chunk[cut:]
        if cut:
            yield chunk[:cut]
    if tail:
        yield tail + b"\n"


def _chain_first(first: bytes, rest: Iterable[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def _header_columns(line: bytes, separator: bytes) -> list[str] | None:
    """Column names from a header line; None when the line is not a header.

    A header has no number in it and names at least one known column; anything else is left to
    be read (and, if need be, reported) as data.
    """
    fields = line.decode("utf-8", errors="replace").strip().split(separator.decode())
    if any(_is_number(field) for field in fields):
        return None
    known = [_HEADER_ALIASES.get(_header_key(field)) for field in fields]
    if not any(known):
        return None
    columns = [name or f"ignored_{i}" for i, name in enumerate(known)]
    missing = [name for name in RATING_COLUMNS[:3] if name not in columns]
    if missing:
        raise ValueError(f"ratings header {line.decode(errors='replace').strip()!r} lacks {missing}")
    return columns


def _header_key(field: str) -> str:
    return field.strip().strip('"').lower().replace("_", "")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _columns_by_position(block: bytes, separator: bytes) -> list[str]:
    """user_id, movie_id, rating[, timestamp]: as many as most of the first lines have fields."""
    lines = block[: 1 << 20].splitlines()[:10_000]
    counts = Counter(line.count(separator) + 1 for line in lines if line.strip())
    if not counts:
        return list(RATING_COLUMNS)
    n_fields = counts.most_common(1)[0][0]
    if n_fields not in (3, 4):
        raise ValueError(
            f"ratings lines have {n_fields} fields separated by {separator!r}; expected 3 or 4 "
            "(user, movie, rating[, timestamp])"
        )
    return list(RATING_COLUMNS[:n_fields])


def _parse_block(
    block: bytes, separator: bytes, columns: list[str], first_line: int
) -> tuple[_Columns, list[RowProblem]]:
    """The ratings of whole lines `block` (first one numbered `first_line`) and its bad lines."""
    n_lines = block.count(b"\n")
    if _looks_regular(block, separator, len(columns), n_lines):
        try:
            frame = _read_csv(block, separator, columns, na_filter=True)
        except pd.errors.ParserError:  # a line with too many fields
            frame = None
        if frame is not None and len(frame) == n_lines and not _bad_values(frame).any():
            return _typed(frame, np.arange(first_line, first_line + n_lines)), []
    return _parse_block_line_by_line(block, separator, columns, first_line)


def _looks_regular(block: bytes, separator: bytes, n_fields: int, n_lines: int) -> bool:
    """Cheap necessary condition for a clean block: separator count adds up, first line is right.

    pandas would quietly drop the extra fields of a too-long first line, so that is checked here.
    """
    first_line = block[: block.find(b"\n")]
    return block.count(separator) == n_lines * (n_fields - 1) and first_line.count(separator) == n_fields - 1


def _read_csv(block: bytes, separator: bytes, columns: list[str], na_filter: bool) -> pd.DataFrame:
    """pandas' C engine over whole lines, types inferred (text where a value is no number)."""
    if not block:
        return pd.DataFrame({name: pd.Series([], dtype=object) for name in columns})
    return pd.read_csv(
        io.BytesIO(block),
        sep=separator.decode(),
        header=None,
        names=columns,
        index_col=False,
        quoting=csv.QUOTE_NONE,
        skip_blank_lines=False,
        na_filter=na_filter,
        engine="c",
    )


def _parse_block_line_by_line(
    block: bytes, separator: bytes, columns: list[str], first_line: int
) -> tuple[_Columns, list[RowProblem]]:
    """Sort the block's lines into good and bad (vectorised), then read the good ones."""
    line_reasons = _line_reasons(block, separator, len(columns))
    good = line_reasons == ""
    lines = np.arange(first_line, first_line + len(good))
    problems = [RowProblem(int(lines[i]), str(line_reasons[i])) for i in np.flatnonzero(~good)]

    # Without the NA filter an empty field stays '' and 'nan' stays text, so both get reported.
    frame = _read_csv(_keep_lines(block, good), separator, columns, na_filter=False)
    frame_lines = lines[good]
    bad_values = _bad_values(frame)
    for row in np.flatnonzero(bad_values):
        problems.append(RowProblem(int(frame_lines[row]), _value_reason(frame.iloc[row])))
    problems.sort(key=lambda problem: problem.line)
    return _typed(frame[~bad_values], frame_lines[~bad_values]), problems


def _line_reasons(block: bytes, separator: bytes, n_fields: int) -> np.ndarray:
    """Per line of `block`, why it cannot be read ('' when its shape is fine): str array (n,)."""
    data = np.frombuffer(block, dtype=np.uint8)
    ends = np.flatnonzero(data == _NEWLINE)
    starts = np.concatenate(([0], ends[:-1] + 1))
    separators = np.flatnonzero(data == separator[0])
    fields = np.diff(np.searchsorted(separators, ends), prepend=0) + 1
    lengths = ends - starts
    carriage_returns = np.flatnonzero(data == _CR)
    # pandas ends a line at a lone '\r', which would shift every line number after it.
    stray_cr = np.zeros(len(ends), dtype=bool)
    stray_cr[np.searchsorted(ends, carriage_returns[data[carriage_returns + 1] != _NEWLINE])] = True
    empty = (lengths == 0) | ((lengths == 1) & (data[starts] == _CR))

    reasons = np.full(len(ends), "", dtype=object)
    wrong_count = np.flatnonzero(fields != n_fields)
    reasons[wrong_count] = [
        f"malformed: expected {n_fields} fields, got {count}" for count in fields[wrong_count]
    ]
    reasons[stray_cr] = "malformed: carriage return inside the line"
    reasons[empty] = "empty line"
    return reasons


def _keep_lines(block: bytes, keep: np.ndarray) -> bytes:
    """The lines of `block` where `keep` (bool, one per line) is True."""
    data = np.frombuffer(block, dtype=np.uint8)
    ends = np.flatnonzero(data == _NEWLINE)
    line_bytes = np.diff(ends, prepend=-1)
    return data[np.repeat(keep, line_bytes)].tobytes()


def _bad_values(frame: pd.DataFrame) -> np.ndarray:
    """Rows with a value that is not a finite number (or not a whole one where it must be)."""
    bad = np.zeros(len(frame), dtype=bool)
    for column in _rating_columns(frame):
        if pd.api.types.is_integer_dtype(frame[column]):
            continue
        values = _as_numbers(frame[column])
        bad |= ~np.isfinite(values)
        if column in _WHOLE_NUMBER_COLUMNS:
            with np.errstate(invalid="ignore"):
                bad |= values != np.round(values)
    return bad


def _as_numbers(values: pd.Series) -> np.ndarray:
    """float64 (n,) of a parsed column; text that is no number becomes NaN."""
    if not pd.api.types.is_numeric_dtype(values):
        values = pd.to_numeric(values, errors="coerce")
    return values.to_numpy(dtype=np.float64, na_value=np.nan)


def _value_reason(row: pd.Series) -> str:
    """Why this parsed row cannot be kept: its first unusable value."""
    for column in _rating_columns(row):
        raw = row[column]
        shown = repr(raw) if isinstance(raw, str) else str(raw)
        number = _as_numbers(pd.Series([raw], dtype=object))[0]
        if isinstance(raw, str) and raw.strip() == "":
            return f"{column} is empty"
        if not np.isfinite(number):
            return f"{column} {shown} is not a number"
        if column in _WHOLE_NUMBER_COLUMNS and number != round(number):
            return f"{column} {shown} is not a whole number"
    return "unreadable values"


def _rating_columns(frame: pd.DataFrame | pd.Series) -> list[str]:
    names = frame.columns if isinstance(frame, pd.DataFrame) else frame.index
    return [name for name in RATING_COLUMNS if name in names]


def _typed(frame: pd.DataFrame, lines: np.ndarray) -> _Columns:
    """The `RatingsSet.ratings` columns, typed, from a parsed frame without bad values."""
    n = len(frame)
    return {
        "user_id": _as_int64(frame["user_id"]),
        "movie_id": _as_int64(frame["movie_id"]),
        "rating": _as_numbers(frame["rating"]).astype(np.float32),
        "timestamp": _as_int64(frame["timestamp"]) if "timestamp" in frame else np.zeros(n, np.int64),
        "line": np.asarray(lines, dtype=np.int64),
    }


def _as_int64(values: pd.Series) -> np.ndarray:
    """int64 (n,) of a column of whole numbers, without a float round trip when already ints."""
    if pd.api.types.is_integer_dtype(values):
        return values.to_numpy(dtype=np.int64)
    return _as_numbers(values).astype(np.int64)


class _RatingsBuffer:
    """Typed ratings columns filled block by block.

    Preallocated to the expected row count (grown by half when short) rather than joined from
    per-block arrays at the end: a join needs twice the result's memory at its peak (25M ratings:
    1.8 GB instead of 0.9 GB).
    """

    def __init__(self, capacity: int) -> None:
        self.rows = 0
        self.columns = {name: np.empty(capacity, dtype) for name, dtype in RATINGS_DTYPES.items()}

    def append(self, block: _Columns) -> None:
        n = len(block["line"])
        capacity = len(self.columns["line"])
        if self.rows + n > capacity:
            grown = max(self.rows + n, capacity + capacity // 2)
            self.columns = {name: self._resized(array, grown) for name, array in self.columns.items()}
        for name, array in self.columns.items():
            array[self.rows : self.rows + n] = block[name]
        self.rows += n

    def _resized(self, array: np.ndarray, capacity: int) -> np.ndarray:
        resized = np.empty(capacity, array.dtype)
        resized[: self.rows] = array[: self.rows]
        return resized

    def frame(self) -> pd.DataFrame:
        """The `RatingsSet.ratings` frame (views of the buffer, no copy)."""
        return pd.DataFrame({name: array[: self.rows] for name, array in self.columns.items()}, copy=False)
