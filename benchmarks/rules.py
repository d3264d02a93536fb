"""Rules stage speed: the compiled five-unanswered rule against hand-written SQL, same data, same run.

    python benchmarks/rules.py --leads 100000 [--database URL]

Prints rows/s for both and the ratio (compiled / hand-written; lower bound = 1.0). The data is
made with set-based SQL: each lead gets 0-7 emails, a third of them a reply in the middle.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, insert, select, text
from sqlalchemy.orm import Session

from tasks.config.loader import load_config
from tasks.rules.engine import find_matches
from tasks.store.db import make_engine
from tasks.store.models import Activity, ActivityKind, EmailStatus, Lead, LeadStatus, OutboxEmail
from tasks.store.schema import upgrade

T0 = dt.datetime(2026, 1, 5, 15, tzinfo=dt.UTC)

HAND_WRITTEN = """
SELECT l.id FROM leads l
LEFT JOIN (SELECT lead_id, max(occurred_at) AS at FROM activities
           WHERE kind = 'reply' AND occurred_at <= :as_of GROUP BY lead_id) r ON r.lead_id = l.id
JOIN outbox_emails e ON e.lead_id = l.id
WHERE l.status IN ('new', 'working', 'nurturing', 'qualified') AND l.merged_into_id IS NULL
  AND e.status IN ('sent', 'recorded') AND e.sent_at <= :as_of
  AND (e.delivery IS NULL OR e.delivery NOT IN ('bounced', 'dropped'))
  AND e.sent_at > coalesce(r.at, l.cycle_started_at, l.created_at)
GROUP BY l.id HAVING count(*) >= 5
"""


def build(session: Session, leads: int, seed: int) -> None:
    rng = random.Random(seed)
    lead_rows = [
        {
            "email": f"p{i}@c{i % 997}.example",
            "email_key": f"p{i}@c{i % 997}.example",
            "status": LeadStatus.NURTURING,
            "status_changed_at": T0,
            "created_at": T0,
            "source": "web",
            "tags": [],
            "score": 0,
        }
        for i in range(leads)
    ]
    session.execute(insert(Lead), lead_rows)
    ids = list(session.scalars(select(Lead.id)))
    emails, replies = [], []
    for lead_id in ids:
        n = rng.randint(0, 7)
        for k in range(n):
            at = T0 + dt.timedelta(days=3 * k)
            emails.append(
                {
                    "dedupe_key": f"b:{lead_id}:{k}",
                    "lead_id": lead_id,
                    "template": "welcome",
                    "to_email": "x@y.example",
                    "subject": "s",
                    "body_text": "t",
                    "body_html": "h",
                    "status": EmailStatus.RECORDED,
                    "due_at": at,
                    "created_at": at,
                    "sent_at": at,
                    "attempts": 0,
                }
            )
        if n > 2 and rng.random() < 0.33:
            replies.append(
                {
                    "lead_id": lead_id,
                    "kind": ActivityKind.REPLY,
                    "occurred_at": T0 + dt.timedelta(days=3 * (n // 2), hours=1),
                }
            )
    for chunk in range(0, len(emails), 20_000):
        session.execute(insert(OutboxEmail), emails[chunk : chunk + 20_000])
    session.execute(insert(Activity), replies)
    session.commit()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--database", default=None, help="default: a temporary SQLite file")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    url = args.database or f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"
    engine = make_engine(url)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    upgrade(engine)
    config = load_config(Path(__file__).resolve().parents[1] / "config")
    rule = next(r for r in config.rules.rules if r.name == "five_unanswered_emails")
    as_of = T0 + dt.timedelta(days=30)
    with Session(engine) as session:
        build(session, args.leads, args.seed)
        if engine.dialect.name == "postgresql":
            session.execute(text("ANALYZE"))
        emails = session.scalar(select(func.count()).select_from(OutboxEmail))
        timings = {}
        for name, run in (
            (
                "hand-written",
                lambda: set(
                    session.execute(
                        text(HAND_WRITTEN), {"as_of": as_of.replace(tzinfo=None)}
                    ).scalars()
                ),
            ),
            ("compiled", lambda: {m.lead_id for m in find_matches(session, rule, as_of)}),
        ):
            best = float("inf")
            for _ in range(3):
                started = time.perf_counter()
                result = run()
                best = min(best, time.perf_counter() - started)
            timings[name] = (best, result)
    hand, compiled = timings["hand-written"], timings["compiled"]
    assert hand[1] == compiled[1], "the compiled rule and the hand-written SQL disagree"
    print(
        f"store: {engine.dialect.name}; {args.leads:,} leads, {emails:,} emails, {len(hand[1]):,} matches"
    )
    for name, (seconds, _) in timings.items():
        print(f"  {name:>12}: {seconds:.3f} s  ({args.leads / seconds:,.0f} leads/s)")
    print(f"  ratio compiled / hand-written: {compiled[0] / hand[0]:.2f}")


if __name__ == "__main__":
    main()
