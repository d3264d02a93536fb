"""Small pieces the importers share."""

from __future__ import annotations

import gc

import pytest

from tasks.ingest.rows import IMPORT_GC_THRESHOLD, fewer_collections


def test_fewer_collections_during_an_import_and_the_old_thresholds_after_even_a_failure() -> None:
    before = gc.get_threshold()
    with fewer_collections():
        assert gc.get_threshold() == (IMPORT_GC_THRESHOLD, *before[1:])
        assert gc.isenabled()  # cycles are still collected, only less often
    assert gc.get_threshold() == before
    with pytest.raises(RuntimeError), fewer_collections():
        raise RuntimeError("a bad file")
    assert gc.get_threshold() == before
