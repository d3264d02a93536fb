"""Rules stage speed: the whole stage (the shipped rules, every action) against hand-written SQL
that makes the same updates on the same data, in one run.

    python benchmarks/rules.py --leads 1000000 --database postgresql+psycopg://postgres@127.0.0.1/nurture_bench

The store (wiped first: use a scratch database) gets N leads made with set-based SQL, with 200
days of realistic history: every lead created on one of those days, 0-8 emails four days apart
(2% bounced), a reply for one lead in five, auto-replies, meetings held, owners for 60% of them,
cadence enrolments, and a few "no" answers to budget, authority and need. Yesterday's daily run
is played by the hand-written SQL (untimed). Then today's rules stage runs, each variant in a
transaction rolled back after, alternately, best of ``--repeat``:

* ``compiled``: ``apply_rules`` with ``config/rules.yaml``, what the daily flow runs;
* ``hand-written``: the same matches and updates as a fixed script of SQL statements (episodes,
  decisions, statuses, cadence exits, breakup emails with a fixed body instead of the rendered
  template, follow-ups, owner release and round-robin reassignment), the lower bound.

Both must leave the same state (compared as counts per rule, action, status, template, follow-up
day and episode state) or the benchmark fails. Prints seconds, leads/s and the ratio
(compiled / hand-written; the goal is <= 2).
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session

from tasks.config.loader import NurtureConfig, load_config
from tasks.deals.calendar import next_business_day
from tasks.owners import sync_owners
from tasks.rules.engine import apply_rules
from tasks.store.db import make_engine
from tasks.store.schema import upgrade

T0 = dt.datetime(2026, 1, 5, 14, tzinfo=dt.UTC)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
HISTORY_DAYS = 200
TODAY = T0 + dt.timedelta(days=HISTORY_DAYS)
EXPECTED_RULES = ["five_unanswered_emails", "no_budget", "no_authority", "no_need", "owner_idle"]


# -- data ----------------------------------------------------------------------------------


def build(engine: Engine, leads: int, config: NurtureConfig) -> None:
    """N leads with 200 days of history, in a handful of INSERT ... SELECT statements."""
    with Session(engine) as session:
        sync_owners(session, config.owners)
        session.commit()
    days = HISTORY_DAYS
    sqlite = engine.dialect.name == "sqlite"

    def ts(offset_days: str) -> str:
        """T0 plus a number of days given as a SQL expression."""
        if sqlite:
            return f"(datetime('{_naive(T0)}', '+' || ({offset_days}) || ' days') || '.000000')"
        return f"(TIMESTAMP '{_naive(T0)}' + ({offset_days}) * INTERVAL '1 day')"

    numbers = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :n)"
    status = (
        "CASE i % 20 WHEN 0 THEN 'disqualified' WHEN 1 THEN 'customer' WHEN 2 THEN 'working' "
        "WHEN 3 THEN 'working' WHEN 4 THEN 'working' WHEN 5 THEN 'new' ELSE 'nurturing' END"
    )
    owners = "(SELECT count(*) FROM owners)"
    statements = [
        f"""{numbers}
        INSERT INTO leads (id, email, email_key, first_name, status, status_changed_at, created_at,
                           source, tags, score, owner_id, owner_assigned_at, budget, authority, need)
        SELECT i, 'p' || i || '@c' || (i % 997) || '.example', 'p' || i || '@c' || (i % 997) || '.example',
               'P' || i, {status}, {ts(f"i % {days}")}, {ts(f"i % {days}")}, 'web', '[]', 0,
               CASE WHEN i % 10 < 6 THEN 1 + i % {owners} END,
               CASE WHEN i % 10 < 6 THEN {ts(f"i % {days}")} END,
               CASE WHEN i % 97 = 0 THEN 'no' END, CASE WHEN i % 89 = 0 THEN 'no' END,
               CASE WHEN i % 83 = 0 THEN 'no' END
        FROM n""",
        # Emails j = 0..k-1 at created + 1 + 4j days, up to today; k = (7i) % 9.
        f"""{numbers}, k(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM k WHERE j < 7)
        INSERT INTO outbox_emails (dedupe_key, lead_id, template, to_email, subject, body_text,
                                   body_html, status, delivery, due_at, created_at, sent_at, attempts)
        SELECT 'b:' || i || ':' || j, i, 'welcome', 'x@y.example', 's', 't', 'h', 'recorded',
               CASE WHEN (i + j) % 50 = 0 THEN 'bounced' END, at, at, at, 0
        FROM (SELECT i, j, {ts(f"i % {days} + 1 + 4 * j")} AS at FROM n JOIN k ON j < (7 * i) % 9) e
        WHERE at <= :today""",
        f"""{numbers}
        INSERT INTO activities (lead_id, kind, occurred_at)
        SELECT i, 'reply', {ts(f"i % {days} + 10")} FROM n WHERE i % 5 = 0
        UNION ALL SELECT i, 'auto_reply', {ts(f"i % {days} + 6")} FROM n WHERE i % 13 = 0
        UNION ALL SELECT i, 'meeting_held', {ts(f"i % {days} + 20")} FROM n WHERE i % 17 = 0""",
        "DELETE FROM activities WHERE occurred_at > :today",
        """INSERT INTO cadence_enrolments (lead_id, cadence, status, enrolled_at, next_step)
        SELECT id, 'new_lead_nurture', 'active', created_at, 1 FROM leads
        WHERE status IN ('new', 'working', 'nurturing')""",
    ]
    with engine.begin() as conn:
        for sql in statements:
            conn.execute(text(sql), {"n": leads, "today": _naive(TODAY)})
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT setval('leads_id_seq', (SELECT max(id) FROM leads))"))
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))


def _naive(moment: dt.datetime) -> str:
    """A timestamp as the store keeps it: naive UTC, microseconds (SQLAlchemy's SQLite format)."""
    return (
        moment.astimezone(dt.UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    )


# -- the hand-written lower bound ----------------------------------------------------------


def hand_written(conn: Connection, config: NurtureConfig, as_of: dt.datetime, run_id: int) -> None:
    """The shipped rules as fixed SQL: what a DBA would write for exactly these five rules."""
    sqlite = conn.dialect.name == "sqlite"
    greatest = "max" if sqlite else "greatest"
    json = "json_object" if sqlite else "json_build_object"
    iso = as_of.isoformat()
    params: dict[str, Any] = {"as_of": _naive(as_of), "run": run_id, "epoch": _naive(EPOCH)}
    temp = "CREATE TEMP TABLE"

    def run(statement: Any, values: dict[str, Any] | None = None) -> Any:
        # PostgreSQL must be told a text parameter is a timestamp where it lands in a SELECT list.
        if not sqlite:
            sql = statement.text
            for name in ("as_of", "epoch", "idle_bound"):
                sql = sql.replace(f":{name}", f"CAST(:{name} AS TIMESTAMP)")
            statement = text(sql)
        return conn.execute(statement, values or {})

    def days_ago(n: int) -> str:
        return _naive(as_of - dt.timedelta(days=n))

    whole_days = (
        "CAST(julianday(:as_of) - julianday(since) AS INTEGER)"
        if sqlite
        else "CAST(extract(day FROM :as_of - since) AS INTEGER)"
    )

    run(text(f"{temp} disq (id INTEGER PRIMARY KEY)"))
    eligible = """l.merged_into_id IS NULL AND l.status IN ('new', 'working', 'nurturing', 'qualified')
        AND l.created_at <= :as_of AND NOT EXISTS (SELECT 1 FROM disq WHERE disq.id = l.id)
        AND NOT EXISTS (SELECT 1 FROM opportunities o WHERE o.lead_id = l.id AND o.status = 'open')"""
    run(
        text(f"""{temp} act AS SELECT lead_id,
            max(CASE WHEN kind = 'reply' THEN occurred_at END) AS last_reply,
            max(CASE WHEN kind IN ('reply', 'meeting_held', 'stage_changed') THEN occurred_at END)
                AS last_progress
        FROM activities WHERE occurred_at <= :as_of GROUP BY lead_id"""),
        params,
    )
    run(text("CREATE UNIQUE INDEX act_lead ON act (lead_id)"))
    matches = {
        "five_unanswered_emails": f"""SELECT l.id, {json}('unanswered_emails', count(*)) AS facts
            FROM leads l JOIN outbox_emails e ON e.lead_id = l.id
            LEFT JOIN act a ON a.lead_id = l.id
            WHERE {eligible} AND e.status IN ('sent', 'recorded') AND e.sent_at <= :as_of
              AND (e.delivery IS NULL OR e.delivery NOT IN ('bounced', 'dropped'))
              AND e.sent_at > {greatest}(coalesce(a.last_reply, :epoch),
                                         coalesce(l.cycle_started_at, l.created_at))
            GROUP BY l.id HAVING count(*) >= 5""",
        "no_budget": f"""SELECT l.id, {json}('budget', 'no', 'status', l.status) AS facts
            FROM leads l WHERE {eligible} AND l.budget = 'no'
              AND l.status IN ('new', 'working', 'nurturing')""",
        "no_authority": f"""SELECT l.id, {json}('authority', 'no', 'status', l.status) AS facts
            FROM leads l WHERE {eligible} AND l.authority = 'no'
              AND l.status IN ('new', 'working', 'nurturing')""",
        "no_need": f"""SELECT l.id, {json}('need', 'no', 'status', l.status) AS facts
            FROM leads l WHERE {eligible} AND l.need = 'no'
              AND l.status IN ('new', 'working', 'nurturing')""",
        "owner_idle": f"""SELECT id, {json}('owner_idle_days', {whole_days}, 'status', status) AS facts
            FROM (SELECT l.id, l.status, {greatest}(coalesce(l.owner_assigned_at, :epoch),
                         coalesce(a.last_progress, :epoch), coalesce(l.cycle_started_at, :epoch)) AS since
                  FROM leads l LEFT JOIN act a ON a.lead_id = l.id
                  WHERE {eligible} AND l.owner_id IS NOT NULL
                    AND l.status IN ('new', 'working', 'nurturing')) idle
            WHERE since <= :idle_bound""",
    }
    rules = {r.name: r for r in config.rules.rules}
    for name, match_sql in matches.items():
        rule = rules[name]
        p = params | {"rule": name, "idle_bound": days_ago(100)}
        run(text(f"{temp} m AS {match_sql}"), p)
        run(text("CREATE UNIQUE INDEX m_id ON m (id)"))
        run(
            text("""UPDATE rule_episodes SET ended_at = :as_of WHERE rule = :rule
                AND ended_at IS NULL AND NOT EXISTS (SELECT 1 FROM m WHERE m.id = rule_episodes.lead_id)"""),
            p,
        )
        run(
            text(f"""{temp} f AS SELECT id, facts FROM m WHERE NOT EXISTS (SELECT 1 FROM rule_episodes r
                WHERE r.rule = :rule AND r.lead_id = m.id AND r.ended_at IS NULL)"""),
            p,
        )
        run(
            text("""INSERT INTO rule_episodes (rule, lead_id, started_at, run_id)
                SELECT :rule, id, :as_of, :run FROM f"""),
            p,
        )
        for action in rule.then:
            kind = action.kind
            key = "'rule:' || :rule || ':' || f.id || ':' || :suffix"
            value = getattr(action, kind)
            reason = None if value is True else str(getattr(value, "value", value))
            decision = {"disqualify": "disqualify", "send": "send", "follow_up": "schedule_follow_up",
                        "release_owner": "release_owner"}[kind]  # fmt: skip
            run(
                text(f"""INSERT INTO decisions (dedupe_key, run_id, as_of, action, lead_id, rule,
                    reason, facts, created_at)
                    SELECT {key}, :run, :as_of, :action, f.id, :rule, :reason, f.facts, :as_of FROM f"""),
                p | {"action": decision, "reason": reason, "suffix": f"{iso}:{kind}"},
            )
            if kind == "disqualify":
                run(
                    text("""UPDATE leads SET status = 'disqualified', status_reason = :reason,
                        status_changed_at = :as_of WHERE id IN (SELECT id FROM f)"""),
                    p | {"reason": reason},
                )
                run(
                    text("""UPDATE cadence_enrolments SET status = 'exited', ended_at = :as_of,
                        end_reason = 'disqualified', next_due_at = NULL
                        WHERE status = 'active' AND lead_id IN (SELECT id FROM f)"""),
                    p,
                )
                run(text("INSERT INTO disq SELECT id FROM f"))
            elif kind == "send":
                run(
                    text(f"""INSERT INTO outbox_emails (dedupe_key, lead_id, decision_id, template,
                        to_email, subject, body_text, body_html, status, due_at, created_at,
                        attempts, run_id)
                        SELECT 'decision:' || d.id, f.id, d.id, :template, l.email,
                               'I''ll stop here, ' || coalesce(l.first_name, 'there'),
                               'Hi ' || coalesce(l.first_name, 'there'), 'Hi', 'queued',
                               :as_of, :as_of, 0, :run
                        FROM f JOIN leads l ON l.id = f.id
                        JOIN decisions d ON d.dedupe_key = {key}
                        WHERE l.email IS NOT NULL"""),
                    p | {"template": action.send, "suffix": f"{iso}:{kind}"},
                )
            elif kind == "follow_up":
                due = next_business_day(
                    as_of.date() + action.follow_up.after, config.followups.holidays
                )
                run(
                    text(f"""INSERT INTO followups (lead_id, dedupe_key, due_on, basis, status,
                        created_at, run_id)
                        SELECT f.id, {key}, :due, 'rule_delay', 'scheduled', :as_of, :run FROM f"""),
                    p | {"due": due, "suffix": f"{iso}:{kind}"},
                )
            elif kind == "release_owner":
                _reassign(run, sqlite, p, iso)
        run(text("DROP TABLE f"))
        run(text("DROP TABLE m"))
    run(text("DROP TABLE disq"))
    run(text("DROP TABLE act"))


def _reassign(run: Callable[..., Any], sqlite: bool, p: dict[str, Any], iso: str) -> None:
    """Round robin over active owners in lead-id order, skipping the owner being released."""
    run(
        text("""CREATE TEMP TABLE ro AS SELECT id, row_number() OVER (ORDER BY id) - 1 AS k
            FROM owners WHERE active ORDER BY id"""),
    )
    run(
        text("""CREATE TEMP TABLE ra AS SELECT f.id, l.owner_id AS old,
            (row_number() OVER (ORDER BY f.id)) % (SELECT count(*) FROM ro) AS k
            FROM f JOIN leads l ON l.id = f.id"""),
    )
    run(
        text("""CREATE TEMP TABLE rn AS SELECT ra.id, ra.old, CASE WHEN o.id = ra.old
            THEN (SELECT o2.id FROM ro o2 WHERE o2.k = (ra.k + 1) % (SELECT count(*) FROM ro))
            ELSE o.id END AS owner FROM ra JOIN ro o ON o.k = ra.k"""),
    )
    run(
        text("""UPDATE leads SET owner_id = rn.owner, owner_assigned_at = :as_of
            FROM rn WHERE rn.id = leads.id"""),
        p,
    )
    json = "json_object" if sqlite else "json_build_object"
    run(
        text(f"""INSERT INTO decisions (dedupe_key, run_id, as_of, action, lead_id, rule, facts,
            created_at)
            SELECT 'assign:' || id || ':' || :iso, :run, :as_of, 'assign_owner', id, 'round_robin',
                   {json}('owner_id', owner, 'released_from', old), :as_of FROM rn"""),
        p | {"iso": iso},
    )
    for table in ("rn", "ra", "ro"):
        run(text(f"DROP TABLE {table}"))


# -- comparing outcomes ----------------------------------------------------------------------

DIGEST = {
    "decisions": "SELECT rule, action, count(*) FROM decisions GROUP BY rule, action",
    "leads": """SELECT status, status_reason, owner_id IS NULL, count(*) FROM leads
                GROUP BY status, status_reason, owner_id IS NULL""",
    "episodes": "SELECT rule, ended_at IS NULL, count(*) FROM rule_episodes GROUP BY rule, ended_at IS NULL",
    "emails": "SELECT template, status, count(*) FROM outbox_emails GROUP BY template, status",
    "followups": "SELECT basis, due_on, count(*) FROM followups GROUP BY basis, due_on",
    "enrolments": "SELECT status, end_reason, count(*) FROM cadence_enrolments GROUP BY status, end_reason",
    "reassigned": "SELECT count(*) FROM leads WHERE owner_assigned_at = :as_of",
}


def digest(conn: Connection, as_of: dt.datetime) -> dict[str, list[tuple[Any, ...]]]:
    return {
        name: sorted(
            (
                tuple(str(v) for v in row)
                for row in conn.execute(text(sql), {"as_of": _naive(as_of)})
            ),
        )
        for name, sql in DIGEST.items()
    }


# -- the run ---------------------------------------------------------------------------------


def timed(
    engine: Engine, work: Callable[[Connection], None], as_of: dt.datetime
) -> tuple[float, dict[str, list[tuple[Any, ...]]]]:
    """Run ``work`` in a transaction, time it, read the outcome, roll back."""
    with engine.connect() as conn:
        transaction = conn.begin()
        started = time.perf_counter()
        work(conn)
        seconds = time.perf_counter() - started
        outcome = digest(conn, as_of)
        transaction.rollback()
    return seconds, outcome


def new_run(engine: Engine, as_of: dt.datetime) -> int:
    with engine.begin() as conn:
        return int(
            conn.execute(
                text("INSERT INTO runs (kind, as_of, started_at, counts) VALUES "
                     "('daily', :as_of, :as_of, '{}') RETURNING id"),
                {"as_of": _naive(as_of)},
            ).scalar_one()
        )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--database", default=None, help="default: a temporary SQLite file")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    url = args.database or f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"
    engine = make_engine(url)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    upgrade(engine)
    config = load_config(Path(__file__).resolve().parents[1] / "config")
    names = [r.name for r in config.rules.rules if r.enabled]
    assert names == EXPECTED_RULES, f"the hand-written SQL mirrors {EXPECTED_RULES}, not {names}"

    started = time.perf_counter()
    build(engine, args.leads, config)
    yesterday = TODAY - dt.timedelta(days=1)
    yesterday_run = new_run(engine, yesterday)
    with engine.begin() as conn:
        hand_written(conn, config, yesterday, yesterday_run)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    with engine.connect() as conn:
        size = {
            t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in ("leads", "outbox_emails", "activities", "decisions", "rule_episodes")
        }
    print(f"store: {engine.dialect.name}; built in {time.perf_counter() - started:.0f} s: "
          + ", ".join(f"{v:,} {k}" for k, v in size.items()))  # fmt: skip

    run_id = new_run(engine, TODAY)

    def compiled(conn: Connection) -> None:
        with Session(bind=conn, join_transaction_mode="create_savepoint") as session:
            apply_rules(session, config, TODAY, run_id=run_id)
            session.commit()  # releases the savepoint; the outer transaction is rolled back

    best: dict[str, float] = {}
    outcomes: dict[str, Any] = {}
    for _ in range(args.repeat):
        for name, work in (
            ("hand-written", lambda c: hand_written(c, config, TODAY, run_id)),
            ("compiled", compiled),
        ):
            seconds, outcomes[name] = timed(engine, work, TODAY)
            best[name] = min(best.get(name, float("inf")), seconds)
    if outcomes["compiled"] != outcomes["hand-written"]:
        for key in DIGEST:
            if outcomes["compiled"][key] != outcomes["hand-written"][key]:
                print(f"  {key}: compiled {outcomes['compiled'][key]}")
                print(f"  {key}: hand     {outcomes['hand-written'][key]}")
        raise SystemExit("the compiled rules and the hand-written SQL disagree")
    acted = sum(int(r[-1]) for r in outcomes["compiled"]["decisions"])
    print(f"after today: {acted:,} decisions in all; the same outcome from both")
    for name, seconds in best.items():
        print(f"  {name:>12}: {seconds:.3f} s  ({args.leads / seconds:,.0f} leads/s)")
    print(f"  ratio compiled / hand-written: {best['compiled'] / best['hand-written']:.2f}")


if __name__ == "__main__":
    main()
