"""Ingest tests use the shared stores of tests/conftest.py (SQLite and PostgreSQL, migrated)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

AS_OF = dt.datetime(2026, 3, 2, 8, tzinfo=dt.UTC)
FIXTURES = Path(__file__).parent / "fixtures"
