"""External ids to embedding rows: one lookup for single ids and one for arrays of them."""

from __future__ import annotations

import numpy as np

UNKNOWN = -1
"""The row of an id the model does not have."""


class IdIndex:
    """The rows of an ascending array of positive external ids.

    `row(id)` is a dict lookup (one id, on the hot paths); `rows(ids)` maps an array at once,
    through a dense id -> row table when the ids are compact enough (at most `slack` x their
    count, or below `floor`), else by binary search.
    """

    def __init__(self, ids: np.ndarray, slack: int = 8, floor: int = 1 << 20) -> None:
        self.ids = np.ascontiguousarray(ids, dtype=np.int64)
        self._rows: dict[int, int] = dict(zip(self.ids.tolist(), range(len(self.ids)), strict=True))
        self._table: np.ndarray | None = None
        if len(self.ids) and int(self.ids[-1]) < max(slack * len(self.ids), floor):
            # one slot past the largest id holds UNKNOWN: larger ids clip onto it
            self._table = np.full(int(self.ids[-1]) + 2, UNKNOWN, dtype=np.int64)
            self._table[self.ids] = np.arange(len(self.ids))

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, external_id: object) -> bool:
        return external_id in self._rows

    def row(self, external_id: int) -> int | None:
        """The row of one id, None when there is none."""
        return self._rows.get(external_id)

    def rows(self, external_ids: np.ndarray | list[int]) -> np.ndarray:
        """int64 rows of many ids, UNKNOWN (-1) where there is none."""
        ids = np.asarray(external_ids, dtype=np.int64)
        if self._table is not None:
            return np.take(self._table, np.clip(ids, 0, None), mode="clip")
        if len(self.ids) == 0:
            return np.full(ids.shape, UNKNOWN, dtype=np.int64)
        rows = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
        return np.where(self.ids[rows] == ids, rows, UNKNOWN).astype(np.int64)
