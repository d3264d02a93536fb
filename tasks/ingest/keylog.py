"""The block keys an import gives its new leads, kept in memory and stored once at its end.

Each batch looks its people's block keys up among the holders stored before it. Keys written
batch by batch made that lookup a probe of an index the import itself kept growing: at a
million rows, 6M keys, each batch's 30k probes missed the cache, and the lookup and the writes
were 110 s of the import. The import knows what it wrote, so it asks the store only for what
was there before it, and writes its own keys in one pass, in key order, when it ends (inside
the same transaction: nobody else could have seen them earlier anyway).

Pairs are held as sorted numpy runs merged like a binary counter (a run is merged into the one
before it while that one is at most twice its size): a lookup is a few vectorised binary
searches, and 6M pairs take 96 MB.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import numpy.typing as npt

_Array = npt.NDArray[np.int64]


class KeyLog:
    """(block key, lead id) pairs not yet stored, at most one of each."""

    def __init__(self) -> None:
        self._runs: list[tuple[_Array, _Array]] = []

    def __len__(self) -> int:
        return sum(len(keys) for keys, _ in self._runs)

    def add(self, keys: Sequence[int] | _Array, leads: Sequence[int] | _Array) -> None:
        """Pairs ``(keys[i], leads[i])``."""
        if not len(keys):
            return
        run = _sorted(np.array(keys, dtype=np.int64), np.array(leads, dtype=np.int64))
        self._runs.append(run)
        while len(self._runs) > 1 and len(self._runs[-2][0]) <= 2 * len(self._runs[-1][0]):
            keys_b, leads_b = self._runs.pop()
            keys_a, leads_a = self._runs.pop()
            merged = np.concatenate((keys_a, keys_b))
            # Two sorted runs: a stable sort merges them in about one pass, and keeps each
            # key's leads in order (a later batch's leads come after an earlier one's).
            order = np.argsort(merged, kind="stable")
            self._runs.append((merged[order], np.concatenate((leads_a, leads_b))[order]))

    def holders(
        self, wanted: Iterable[int], *, full: int | None = None
    ) -> tuple[dict[int, list[int]], set[int]]:
        """{key: the leads holding it}, for those of ``wanted`` held by anyone here; and the
        keys held by ``full`` leads or more, whose leads are counted, not listed (a caller that
        only needs to know a key is crowded need not build its lists)."""
        found: dict[int, list[int]] = defaultdict(list)
        crowded: set[int] = set()
        probe = np.fromiter(wanted, dtype=np.int64)
        if not len(probe):
            return found, crowded
        spans = [
            (leads, np.searchsorted(keys, probe, "left"), np.searchsorted(keys, probe, "right"))
            for keys, leads in self._runs
        ]
        if full is not None:
            # A key's pairs can be split across runs: all are counted before any is listed.
            count = sum((end - start for _, start, end in spans), np.zeros(len(probe), np.int64))
            listed = count < full
            crowded.update(probe[~listed].tolist())
            probe = probe[listed]
            spans = [(leads, start[listed], end[listed]) for leads, start, end in spans]
        for leads, start, end in spans:
            hit = end > start
            for key, a, b in zip(
                probe[hit].tolist(), start[hit].tolist(), end[hit].tolist(), strict=True
            ):
                found[key].extend(leads[a:b].tolist())
        return found, crowded

    def drain(self, size: int) -> Iterator[tuple[_Array, _Array]]:
        """Every pair in key order, ``size`` at a time as (keys, leads); the log is empty
        afterwards."""
        if not self._runs:
            return
        keys = np.concatenate([k for k, _ in self._runs])
        leads = np.concatenate([ids for _, ids in self._runs])
        self._runs = []
        order = np.argsort(keys, kind="stable")
        keys, leads = keys[order], leads[order]
        for start in range(0, len(keys), size):
            part = slice(start, start + size)
            yield keys[part], leads[part]


def _sorted(keys: _Array, leads: _Array) -> tuple[_Array, _Array]:
    order = np.lexsort((leads, keys))
    return keys[order], leads[order]
