"""Lead import speed and memory: end to end against only cleaning the same rows, in one run.

    python benchmarks/ingest.py --rows 1000000 [--database URL]

Writes an N-row CSV export (HubSpot-style headers; one row in eight repeats a person with a
case-changed address or a new phone, one in thirty has no usable contact), then, each in its own
process so that peak memory is its own:

* ``clean only``: read the file and clean every row with the same libraries (email-validator,
  phonenumbers), nothing stored: the lower bound;
* ``end to end``: the import task's work (read, clean, dedupe against the batch and the store,
  write leads, import rows and decisions, assign owners, enrol in cadences) into a fresh store,
  committed.

Prints rows/s and peak RSS for both and the ratio (end to end / clean only; the goal at 1M rows
is <= 1.5 with peak RSS <= 1 GB).

On PostgreSQL, ``--floor`` then times the store's own share alone: every row the import left
in its tables copied again, server-side, into empty twins of those tables with the same
indexes (``INSERT ... SELECT``, no foreign keys, no Python, no lookups, each lead written once
with its final values). No import that keeps these rows can write them faster, and PostgreSQL
shares the machine's two cores with the cleaning.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import random
import re
import resource
import tempfile
import time
from pathlib import Path
from queue import Empty
from typing import Any

from anyascii import anyascii
from sqlalchemy import text

from tasks.demo.generator import NAMES

# The demo's names from every culture (about 140 first names and 130 surnames).
FIRST = sorted({f for firsts, _ in NAMES.values() for f in firsts})
LAST = sorted({s for _, lasts in NAMES.values() for s in lasts})
COUNTRIES = [("United States", "+1 415 555 {:04d}"), ("UK", "020 7946 {:04d}"),
             ("Deutschland", "030 9018 {:04d}"), ("FR", "01 4268 {:04d}"),
             ("Canada", "(416) 555-{:04d}")]  # fmt: skip
SOURCES = ["Webinar", "Organic Search", "Paid Social", "Referral", "Trade Show", "Partner"]
HEADER = ["Email", "First Name", "Last Name", "Company", "Phone Number", "Country", "Lead Source",
          "Create Date"]  # fmt: skip


def write_export(path: Path, rows: int, seed: int) -> None:
    """An export of ``rows`` rows, streamed to disk."""
    rng = random.Random(seed)
    people = max(rows * 7 // 8, 1)
    with path.open("w", encoding="utf-8", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(HEADER)
        for i in range(rows):
            person = i if i < people else rng.randrange(people)  # the tail repeats people
            # Each company's people have names of their own (namesakes only across companies),
            # so fuzzy matching has real candidates to compare and nobody to merge wrongly.
            company, within = person % 5000, person // 5000
            first = FIRST[(within + company) % len(FIRST)]
            last = LAST[(within * 7 + company) % len(LAST)]
            country, phone_format = COUNTRIES[person % len(COUNTRIES)]
            phone = phone_format.format(person % 10_000)
            local = re.sub(r"[^a-z]+", ".", anyascii(f"{first} {last}").lower()).strip(".")
            email = f"{local}.{person}@company{company}.example"
            if i >= people and rng.random() < 0.5:
                email = email.upper()  # the same person, typed differently
            if person % 30 == 0:
                email, phone = "not an address", ""  # no reachable contact: rejected
            out.writerow([email, first, last, f"Company {company} Inc.", phone, country,
                          SOURCES[person % len(SOURCES)], f"2026-0{1 + person % 9}-1{person % 10}"])  # fmt: skip


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def clean_only(path: str, queue: Any) -> None:
    from tasks.ingest.normalise import clean_lead
    from tasks.ingest.reader import read_records

    started = time.perf_counter()
    rejected = 0
    for record in read_records(Path(path), "lead"):
        rejected += clean_lead(record.fields).rejected
    queue.put((time.perf_counter() - started, _peak_rss_mb(), {"rejected": rejected}))


def end_to_end(path: str, url: str, queue: Any) -> None:
    os.environ["NURTURE_DATABASE_URL"] = url
    import datetime as dt

    from tasks.ingest_tasks import import_leads_task
    from tasks.store.db import get_engine
    from tasks.store.schema import upgrade

    upgrade(get_engine())
    as_of = dt.datetime(2026, 10, 1, 9, tzinfo=dt.UTC)
    started = time.perf_counter()
    counts = import_leads_task.fn([path], as_of, None, None)
    queue.put((time.perf_counter() - started, _peak_rss_mb(), counts))


# What a lead import leaves in the store, in the order it writes it.
STORED = ("leads", "import_rows", "decisions", "lead_match_keys", "lead_aliases",
          "cadence_enrolments")  # fmt: skip


def floor(url: str) -> tuple[float, dict[str, tuple[int, float]]]:
    """Seconds to write the import's rows again into empty twins of their tables, in one
    transaction, and {table: (rows, seconds)}; the seconds to read them are taken off."""
    from tasks.store.db import make_engine

    engine = make_engine(url)
    parts: dict[str, tuple[int, float]] = {}
    with engine.begin() as conn:
        for name in STORED:
            conn.execute(text(f"DROP TABLE IF EXISTS floor_{name}"))
            conn.execute(text(f"CREATE TABLE floor_{name} (LIKE {name} INCLUDING ALL)"))
    with engine.begin() as conn:
        for name in STORED:
            conn.execute(
                text(f"SELECT count(*) FROM {name}")
            )  # warm the cache as the import had it
            started = time.perf_counter()
            conn.execute(text(f"EXPLAIN ANALYZE SELECT * FROM {name} ORDER BY ctid"))
            reading = time.perf_counter() - started
            started = time.perf_counter()
            rows = conn.execute(
                text(f"INSERT INTO floor_{name} SELECT * FROM {name} ORDER BY ctid")
            ).rowcount
            parts[name] = (rows, max(time.perf_counter() - started - reading, 0.0))
        started = time.perf_counter()
    committing = time.perf_counter() - started
    with engine.begin() as conn:
        for name in STORED:
            conn.execute(text(f"DROP TABLE floor_{name}"))
    engine.dispose()
    return sum(seconds for _, seconds in parts.values()) + committing, parts


def in_child(target: Any, *args: Any) -> tuple[float, float, dict[str, Any]]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=target, args=(*args, queue))
    child.start()
    while True:  # a child that dies before answering must not leave us waiting
        try:
            result = queue.get(timeout=1)
            break
        except Empty:
            if not child.is_alive():
                raise SystemExit(
                    f"{target.__name__} failed with exit code {child.exitcode}"
                ) from None
    child.join()
    return result  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--database", default=None, help="default: a temporary SQLite file")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--floor", action="store_true", help="PostgreSQL: also time writing the stored rows alone"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    export = work / "leads.csv"
    write_export(export, args.rows, args.seed)
    url = args.database or f"sqlite:///{work / 'bench.db'}"
    if url.startswith("postgresql"):
        from tasks.store.db import make_engine

        with make_engine(url).begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    size = export.stat().st_size / 1e6
    print(f"{args.rows:,} rows ({size:,.0f} MB); store: {url.split(':')[0]}")
    lower = in_child(clean_only, str(export))
    full = in_child(end_to_end, str(export), url)
    for name, (seconds, rss, counts) in (("clean only", lower), ("end to end", full)):
        shown = {k: v for k, v in counts.items() if k != "run_id"}
        print(f"  {name:>10}: {seconds:7.1f} s  {args.rows / seconds:9,.0f} rows/s  "
              f"peak RSS {rss:6,.0f} MB  {shown}")  # fmt: skip
    print(f"  ratio end to end / clean only: {full[0] / lower[0]:.2f}")
    if args.floor and url.startswith("postgresql"):
        seconds, parts = floor(url)
        print(f"  floor: writing the stored rows alone: {seconds:.1f} s, "
              f"{seconds / lower[0]:.2f} x clean only")  # fmt: skip
        for name, (rows, part) in parts.items():
            print(f"    {name:>20}: {rows:>10,} rows {part:7.1f} s")


if __name__ == "__main__":
    main()
