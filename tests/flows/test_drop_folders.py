"""Drop folders: lead files and saved webhook payloads picked up, moved aside, failures kept."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from flows.ingest import ingest_folder, webhook_events
from tasks.store.models import EmailEvent, Lead, Suppression


def test_lead_files_are_imported_and_moved_and_a_bad_one_is_set_aside(
    engine: Engine, tmp_path: Path
) -> None:
    drop = tmp_path / "leads"
    drop.mkdir()
    (drop / "a.csv").write_text("Email,First Name\nana@acme.example,Ana\n", encoding="utf-8")
    (drop / "b.jsonl").write_text('{"email": "bo@globex.example"}\n', encoding="utf-8")
    (drop / "bad.csv").write_text("Email,Name\nx@y.example,A,B,C\n", encoding="utf-8")
    (drop / "notes.txt").write_text("not a lead file", encoding="utf-8")
    counts = ingest_folder(str(drop), as_of="2026-03-02")
    assert counts == {"files": 3, "imported": 2, "failed": 1, "rows": 2}
    assert sorted(p.name for p in (drop / "imported").iterdir()) == ["a.csv", "b.jsonl"]
    assert "line 2" in (drop / "failed" / "bad.csv.error.txt").read_text()
    assert (drop / "notes.txt").exists()
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(Lead)) == 2
    # Dropped again (a re-sent export): nothing new.
    (drop / "a.csv").write_text("Email,First Name\nana@acme.example,Ana\n", encoding="utf-8")
    assert ingest_folder(str(drop), as_of="2026-03-03")["imported"] == 1
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(Lead)) == 2
    assert len(list((drop / "imported").iterdir())) == 3


def test_saved_webhook_payloads_are_applied_once(engine: Engine, tmp_path: Path) -> None:
    drop = tmp_path / "events"
    drop.mkdir()
    events = [{"sg_event_id": f"e{i}", "event": "unsubscribe", "email": f"p{i}@x.example",
               "timestamp": 1_790_000_000} for i in range(3)]  # fmt: skip
    (drop / "one.json").write_text(json.dumps(events), encoding="utf-8")
    (drop / "two.jsonl").write_text(json.dumps(events[0]) + "\n", encoding="utf-8")
    (drop / "bad.json").write_text("[{not json", encoding="utf-8")
    counts = webhook_events(str(drop))
    assert counts == {"files": 3, "applied": 2, "failed": 1, "events": 4, "new": 3}
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(EmailEvent)) == 3
        assert s.scalar(select(func.count()).select_from(Suppression)) == 3
    assert (drop / "failed" / "bad.json.error.txt").exists()
