"""Small pieces the importers share."""

from __future__ import annotations

import datetime as dt
import gc
import json
from typing import Any

import pytest

from tasks.ingest.rows import IMPORT_GC_THRESHOLD, fewer_collections, raw_json
from tasks.store.db import to_json


def test_fewer_collections_during_an_import_and_the_old_thresholds_after_even_a_failure() -> None:
    before = gc.get_threshold()
    with fewer_collections():
        assert gc.get_threshold() == (IMPORT_GC_THRESHOLD, *before[1:])
        assert gc.isenabled()  # cycles are still collected, only less often
    assert gc.get_threshold() == before
    with pytest.raises(RuntimeError), fewer_collections():
        raise RuntimeError("a bad file")
    assert gc.get_threshold() == before


def test_a_raw_record_is_kept_as_the_json_text_the_store_keeps() -> None:
    record = {"Email": "a@x.example", "badge": {"id": 7}, "Notes": "two\nlines é"}
    assert json.loads(raw_json(record)) == record
    assert raw_json(record) == to_json(record)  # what the JSON column itself would write


def test_a_raw_record_with_values_the_fast_writer_refuses_is_still_kept() -> None:
    """An integer past 64 bits (JSONL can say one) and a value JSON has no word for."""
    record: dict[Any, Any] = {"id": 2**70, 3: "three", "when": dt.date(2026, 3, 2)}
    assert json.loads(raw_json(record)) == {"id": 2**70, "3": "three", "when": "2026-03-02"}
