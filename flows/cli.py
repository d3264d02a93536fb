"""The ``nurture`` command line. Command names and options are a contract: scripts depend on them."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

app = typer.Typer(
    help="Nurture: lead nurture and re-engagement on Prefect.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The store's schema.", no_args_is_help=True)
config_app = typer.Typer(help="Marketing's config under config/.", no_args_is_help=True)
import_app = typer.Typer(help="Import leads and CRM exports (CSV or JSONL).", no_args_is_help=True)
run_app = typer.Typer(help="Run a flow now.", no_args_is_help=True)
rules_app = typer.Typer(help="Marketing's disqualification rules.", no_args_is_help=True)
events_app = typer.Typer(help="SendGrid webhook events.", no_args_is_help=True)
cadence_app = typer.Typer(help="Marketing's email cadences.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(config_app, name="config")
app.add_typer(import_app, name="import")
app.add_typer(run_app, name="run")
app.add_typer(rules_app, name="rules")
app.add_typer(events_app, name="events")
app.add_typer(cadence_app, name="cadence")

out = Console()
err = Console(stderr=True)
_state: dict[str, bool] = {"verbose": False}

Files = Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, readable=True)]
AsOf = Annotated[
    str | None, typer.Option("--as-of", help="YYYY-MM-DD (end of that day, UTC) or ISO datetime")
]


@app.callback()
def main(
    database: Annotated[
        str | None,
        typer.Option(
            "--database",
            envvar="NURTURE_DATABASE_URL",
            help="Store URL (default sqlite:///nurture.db)",
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show Prefect's run logs")
    ] = False,
) -> None:
    if database:
        os.environ["NURTURE_DATABASE_URL"] = database
    # Nothing may reach the internet at run time: the temporary Prefect server's telemetry is off.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    _state["verbose"] = verbose
    if not verbose:
        # The temporary local server may log a traceback when it is stopped while still
        # flushing its own run-history events (not ours, and not our store); --verbose shows it.
        os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")
        # Prefect logs every task run at INFO; the CLI prints its own summary instead.
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def _fail(message: str, code: int = 1) -> None:
    # Plain text, never wrapped: scripts grep these lines for the file and line.
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _guarded(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a flow, turning the errors people can fix into one clear line and a non-zero exit."""
    from tasks.config.loader import ConfigError
    from tasks.ingest.reader import IngestFileError
    from tasks.store.schema import SchemaOutOfDate

    try:
        return fn(*args, **kwargs)
    except ConfigError as exc:
        err.print("[bold red]config is invalid; nothing was run:[/]", highlight=False)
        for problem in exc.problems:
            typer.echo(f"  {problem}", err=True)
        raise typer.Exit(2) from None
    except (IngestFileError, SchemaOutOfDate, ValueError) as exc:
        if _state["verbose"]:
            raise  # with its traceback: --verbose is how a bug report starts
        _fail(f"{exc}; nothing was written" if isinstance(exc, IngestFileError) else str(exc))


# -- db / config --------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply schema migrations to the store."""
    from tasks.store.db import get_engine
    from tasks.store.schema import current_revision, upgrade

    upgrade(get_engine(), revision)
    out.print(f"store at revision {current_revision()}")


@config_app.command("validate")
def config_validate(directory: Annotated[Path | None, typer.Argument()] = None) -> None:
    """Check every config file; print each problem with its file and line."""
    from tasks.config.loader import ConfigError, config_dir, load_config

    target = directory or config_dir()
    try:
        config = load_config(target)
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(str(problem), err=True)
        err.print(f"[bold red]{len(exc.problems)} problem(s)[/]")
        raise typer.Exit(1) from None
    out.print(
        f"{target}: ok ({len(config.rules.rules)} rules, {len(config.cadences.cadences)} cadences, "
        f"{len(config.pipeline.stages)} stages, {len(config.templates)} templates)"
    )


# -- imports ------------------------------------------------------------------------------------


@config_app.command("schema")
def config_schema(
    directory: Annotated[Path, typer.Option("--dir", help="The config directory")] = Path("config"),
) -> None:
    """Write JSON Schemas of the config files to DIR/schemas/ (editors autocomplete from them)."""
    from tasks.config.schemas import write_schemas

    written = write_schemas(directory)
    out.print(f"{len(written)} schema file(s) written to {directory / 'schemas'}" if written
              else "schemas are up to date")  # fmt: skip


@import_app.command("leads")
def import_leads(
    files: Files,
    outcomes: Annotated[
        Path | None, typer.Option(help="Write row,outcome,lead_id,reasons here")
    ] = None,
    encoding: Annotated[
        str | None, typer.Option(help="Force an encoding (default: detected)")
    ] = None,
    as_of: AsOf = None,
) -> None:
    """Import lead files: clean, dedupe, reject what has no reachable contact, assign, enrol."""
    from flows.ingest import ingest

    counts = _guarded(
        ingest,
        [str(f) for f in files],
        as_of=as_of,
        encoding=encoding,
        outcomes=str(outcomes) if outcomes else None,
    )
    _print_counts("leads", counts)


@import_app.command("opportunities")
def import_opportunities(files: Files, as_of: AsOf = None) -> None:
    """Import deals from a CRM export (lost deals must carry a reason)."""
    from flows.ingest import import_crm

    _print_counts(
        "opportunities", _guarded(import_crm, "opportunities", [str(f) for f in files], as_of=as_of)
    )


@import_app.command("activities")
def import_activities(files: Files, as_of: AsOf = None) -> None:
    """Import activities: replies, meetings held or missed, a prospect's no or named date."""
    from flows.ingest import import_crm

    _print_counts(
        "activities", _guarded(import_crm, "activities", [str(f) for f in files], as_of=as_of)
    )


def _print_counts(what: str, counts: dict[str, Any]) -> None:
    shown = ", ".join(f"{k} {v}" for k, v in counts.items() if k != "run_id")
    out.print(f"{what}: {shown} (run {counts.get('run_id')})")


# -- runs ---------------------------------------------------------------------------------------


Workers = Annotated[
    int,
    typer.Option(min=1, help="Workers sharing each day's batches (PostgreSQL store only)"),
]


@run_app.command("daily")
def run_daily(
    as_of: AsOf = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Decide, write and send nothing")
    ] = False,
    workers: Workers = 1,
) -> None:
    """Rules, dead deals, follow-ups, cadence steps, sending and the report, as of a moment."""
    from flows.daily import daily

    counts = _guarded(daily, as_of=as_of, dry_run=dry_run, workers=workers)
    out.print_json(json.dumps(_without_report(counts), default=str))


@app.command("backfill")
def backfill(
    start: Annotated[str, typer.Option(help="First day, YYYY-MM-DD")],
    end: Annotated[str, typer.Option(help="Last day, YYYY-MM-DD")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Write and send nothing")] = False,
    send_late: Annotated[
        bool, typer.Option("--send-late", help="Send even emails past their lateness")
    ] = False,
    workers: Workers = 1,
) -> None:
    """Run the daily flow for each day from START to END, in order."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    import flows.daily

    if dry_run:
        results = _guarded(
            flows.daily.backfill, start=start, end=end, dry_run=True, workers=workers
        )
    else:
        with Progress(
            TextColumn("backfill"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
            console=out, transient=False,
        ) as progress:  # fmt: skip
            bar = progress.add_task("", total=None)

            def done(n: int, total: int, counts: dict[str, Any]) -> None:
                progress.update(
                    bar, completed=n, total=total, description=f"{counts['as_of'][:10]} done"
                )

            flows.daily.on_day_done = done
            try:
                results = _guarded(
                    flows.daily.backfill,
                    start=start,
                    end=end,
                    dry_run=False,
                    send_late=send_late,
                    workers=workers,
                )
            finally:
                flows.daily.on_day_done = None
    if dry_run:
        out.print_json(json.dumps(_without_report(results[0]), default=str))
    else:
        out.print(f"backfill: {len(results)} day(s) run, {start} to {end}")


def _without_report(counts: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in counts.items() if k != "report"}


# -- rules --------------------------------------------------------------------------------------


@rules_app.command("preview")
def rules_preview(
    as_of: AsOf = None,
    sample: Annotated[int, typer.Option(help="Leads shown per rule")] = 5,
) -> None:
    """How many leads each rule would hit, with a sample and their facts; writes nothing."""
    from flows.timing import resolve_as_of
    from tasks.rules.preview import preview_rules
    from tasks.stages import current_config
    from tasks.store.db import session_scope
    from tasks.store.schema import ensure_schema

    config = _guarded(current_config)
    _guarded(ensure_schema)
    moment = _guarded(resolve_as_of, as_of)
    with session_scope(dry_run=True) as session:
        previews = preview_rules(session, config, moment, sample=sample)
    out.print(f"Rules as of {moment.isoformat()} (nothing written)", highlight=False)
    for p in previews:
        state = "enabled" if p.enabled else "disabled"
        out.print(
            f"{p.name} ({state}): {p.matches} lead(s) match, {p.acted_on} would be acted on",
            highlight=False,
            soft_wrap=True,
        )
        for match in p.sample:
            facts = ", ".join(f"{k}={v}" for k, v in match.facts.items())
            out.print(f"  lead {match.lead_id}: {facts}", highlight=False, soft_wrap=True)


@app.command("explain")
def explain(lead_id: int) -> None:
    """Every automatic decision about a lead, with its rule, facts and run."""
    from tasks.rules.preview import explain_lead
    from tasks.store.db import session_scope
    from tasks.store.schema import ensure_schema

    _guarded(ensure_schema)
    with session_scope(dry_run=True) as session:
        decisions = explain_lead(session, lead_id)
    if not decisions:
        _fail(f"no decisions recorded for lead {lead_id}")
    for d in decisions:
        facts = ", ".join(f"{k}={v}" for k, v in d["facts"].items())
        out.print(
            f"{d['as_of']}  {d['action']}  rule {d['rule']}"
            + (f", reason {d['reason']}" if d["reason"] else "")
            + (f", facts {facts}" if facts else "")
            + f" (run {d['run_id']})",
            highlight=False,
            soft_wrap=True,
        )


# -- reading ------------------------------------------------------------------------------------


class ReportFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    HTML = "html"


def _start_moment(value: str) -> dt.datetime:
    """'YYYY-MM-DD' (midnight UTC) or an ISO datetime (naive: UTC)."""
    from dateutil import parser

    try:
        moment = parser.isoparse(value)
    except ValueError:
        raise ValueError(f"--from: expected YYYY-MM-DD or an ISO datetime, got {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


@cadence_app.command("preview")
def cadence_preview(
    name: Annotated[str, typer.Argument(help="A cadence in cadences.yaml")],
    lead: Annotated[list[int] | None, typer.Option("--lead", help="A lead id (repeatable)")] = None,
    sample: Annotated[int, typer.Option(help="Else the first N leads in play")] = 5,
    start: Annotated[
        str | None, typer.Option("--from", help="Enrolment moment (default now)")
    ] = None,
) -> None:
    """Who would get which email when, in their local time and UTC; nothing is written."""
    from rich.table import Table

    from tasks.cadences.preview import preview, sample_leads
    from tasks.stages import current_config
    from tasks.store.db import session_scope
    from tasks.store.schema import ensure_schema

    config = _guarded(current_config)
    _guarded(ensure_schema)
    moment = _guarded(_start_moment, start) if start else dt.datetime.now(dt.UTC)
    with session_scope(dry_run=True) as session:
        ids = lead or sample_leads(session, sample)
        planned = _guarded(preview, session, config, name, ids, moment)
    table = Table(title=f"{name} from {moment:%Y-%m-%d %H:%M} UTC (caps and exits not applied)")
    for column in ("lead", "step", "template", "local time", "zone", "UTC"):
        table.add_column(column)
    for p in planned:
        table.add_row(str(p.lead_id), str(p.step), p.template, f"{p.due_local:%a %Y-%m-%d %H:%M}",
                      p.zone, f"{p.due_utc:%Y-%m-%d %H:%M}")  # fmt: skip
    out.print(table)


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
) -> None:
    """Receive SendGrid's Event Webhook and Inbound Parse, and one-click unsubscribes.

    Set NURTURE_SENDGRID_WEBHOOK_KEY (the Event Webhook's verification key), NURTURE_INBOUND_SECRET
    (the secret in the Inbound Parse URL) and NURTURE_SECRET (what signs unsubscribe and reply
    tokens; the same as the sending flows use).
    """
    import uvicorn

    from tasks.email.webapp import create_app
    from tasks.store.schema import ensure_schema

    _guarded(ensure_schema)
    uvicorn.run(create_app(), host=host, port=port, log_level="info")


@events_app.command("load")
def events_load(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
) -> None:
    """Apply saved webhook payloads: a JSON array of events, or one JSON array or event per line.

    The file is trusted (no signature); events already stored are skipped, so loading a file
    twice changes nothing.
    """
    from tasks.email.events import apply_events, load_event_file
    from tasks.store.db import session_scope
    from tasks.store.schema import ensure_schema

    _guarded(ensure_schema)
    events = _guarded(load_event_file, file)
    with session_scope() as session:
        summary = apply_events(session, events, now=dt.datetime.now(dt.UTC))
    out.print(
        f"{summary.received} events: {summary.stored} new, {summary.duplicates} already stored, "
        f"{summary.unmatched} for no email of ours; {summary.reconciled} emails reconciled as "
        f"sent, {summary.suppressed} addresses suppressed"
    )


@app.command("report")
def report(
    fmt: Annotated[ReportFormat, typer.Option("--format")] = ReportFormat.TABLE,
    out_file: Annotated[
        Path, typer.Option("--out", help="--format html: the file to write")
    ] = Path("nurture-report.html"),
) -> None:
    """Pipeline health: lost reasons, conversion by source, win and win-back rates, emails.

    --format html writes one self-contained page with charts (no network needed to open it).
    """
    from tasks.reports.render import render_summary
    from tasks.reports.summary import pipeline_summary
    from tasks.store.db import session_scope
    from tasks.store.schema import ensure_schema

    _guarded(ensure_schema)
    with session_scope(dry_run=True) as session:
        summary = pipeline_summary(session)
    if fmt is ReportFormat.JSON:
        out.print_json(json.dumps(summary, default=str))
    elif fmt is ReportFormat.HTML:
        from tasks.reports.html import render_html

        out_file.write_text(render_html(summary), encoding="utf-8")
        out.print(f"report written to {out_file}")
    else:
        render_summary(summary, out)


class ExportWhat(StrEnum):
    LEADS = "leads"
    OPPORTUNITIES = "opportunities"
    EMAILS = "emails"
    DECISIONS = "decisions"
    FOLLOWUPS = "followups"


class ExportFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"


@app.command("export")
def export(
    what: ExportWhat,
    fmt: Annotated[ExportFormat, typer.Option("--format")] = ExportFormat.CSV,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File (default stdout)")
    ] = None,
) -> None:
    """Write a table of the store as CSV or JSON lines."""
    from tasks.export import export as export_rows
    from tasks.store.db import session_scope
    from tasks.store.schema import ensure_schema

    _guarded(ensure_schema)
    with session_scope(dry_run=True) as session:
        if output:
            with output.open("w", encoding="utf-8", newline="") as handle:
                n = export_rows(session, what.value, handle, fmt.value)
            err.print(f"{n} {what.value} written to {output}")
        else:
            export_rows(session, what.value, sys.stdout, fmt.value)


@app.command("demo")
def demo(
    leads: Annotated[int, typer.Option(help="People in the synthetic book")] = 1500,
    days: Annotated[int, typer.Option(help="Simulated days of daily runs")] = 120,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic book")] = 7,
    database: Annotated[
        str, typer.Option(help="Demo store (recreated)")
    ] = "sqlite:///nurture-demo.db",
    workdir: Annotated[Path, typer.Option(help="Where the generated input files go")] = Path(
        ".nurture/demo"
    ),
) -> None:
    """Generate a realistic book, import it and run ~120 simulated days on the embedded store."""
    from flows.demo import run_demo

    _guarded(
        run_demo, leads=leads, days=days, seed=seed, database=database, workdir=workdir, console=out
    )


if __name__ == "__main__":  # pragma: no cover
    app()
