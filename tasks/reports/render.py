"""Reports for people: the pipeline summary as terminal tables, and the demo's story."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _n(value: int | float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,}" if isinstance(value, int) else f"{value:.1%}"


def _join(counts: dict[str, int]) -> str:
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{_n(v)} {k.replace('_', ' ')}" for k, v in items) or "none"


def render_summary(summary: dict[str, Any], console: Console) -> None:
    table = Table(title="Pipeline", show_header=True)
    table.add_column("measure")
    table.add_column("value", overflow="fold")
    table.add_row("leads by status", _join(summary["leads_by_status"]))
    table.add_row("imported rows", _join(summary["imports"]))
    table.add_row("disqualified by reason", _join(summary["disqualified_by_reason"]))
    table.add_row("owners released (idle)", _n(summary["owners_released"]))
    table.add_row("deals", _join(summary["deals"]))
    table.add_row("lost, closed by Nurture", _join(summary["lost_by_reason"].get("engine", {})))
    table.add_row("lost, closed by people", _join(summary["lost_by_reason"].get("person", {})))
    table.add_row("lost to competitors", _join(summary["lost_to_competitors"]))
    table.add_row("win rate", _n(summary["win_rate"]))
    table.add_row("follow-ups", _join(summary["followups"]))
    table.add_row("reopened opportunities", _join(summary["reopened_opportunities"]))
    table.add_row("win-back rate", _n(summary["win_back_rate"]))
    table.add_row(
        "win-back by first lost reason",
        ", ".join(
            f"{reason.replace('_', ' ')} {v['won']}/{v['reopened']}"
            for reason, v in sorted(summary["win_back_by_lost_reason"].items())
        )
        or "none",
    )
    table.add_row("open deals, owner warned", _n(summary["open_deals_owner_warned"]))
    table.add_row("emails by status", _join(summary["emails_by_status"]))
    table.add_row("emails opened / clicked", _join(summary.get("emails_engaged", {})))
    table.add_row(
        "days in current stage (open deals)",
        ", ".join(
            f"{k} {v['avg_days']:g} ({v['open_deals']})"
            for k, v in summary.get("time_in_stage", {}).items()
        )
        or "none",
    )
    table.add_row(
        "days to close",
        ", ".join(f"{k} {v:g}" for k, v in summary.get("days_to_close", {}).items()) or "none",
    )
    attention = summary.get("needs_attention", {})
    table.add_row(
        "needs attention",
        f"{attention.get('emails_failed', 0)} emails failed, "
        f"{attention.get('leads_waiting_for_an_owner', 0)} leads waiting for an owner; rejected rows: "
        + (_join(attention.get("rejected_rows_by_reason", {})) or "none"),
    )
    console.print(table)
    sources = Table(
        title="Conversion by lead source",
        caption="suggested points: what conversion so far says each source is worth in "
        "grading.yaml's score (the best source 20); copy them there when you agree",
    )
    for column in ("source", "leads", "won", "conversion", "suggested points"):
        sources.add_column(column, justify="left" if column == "source" else "right")
    for row in summary["conversion_by_source"]:
        rate = row["won"] / row["leads"] if row["leads"] else None
        sources.add_row(
            row["source"], _n(row["leads"]), _n(row["won"]), _n(rate),
            _n(row.get("suggested_points")),
        )  # fmt: skip
    console.print(sources)


def render_story(
    counts: dict[str, Any], console: Console, *, database: str, seconds: float
) -> None:
    leads = counts["leads"]
    report = counts["report"]
    truth = counts.get("truth", {})
    say = console.print
    say("")
    say("[bold]1. Clean before you chase[/]")
    say(
        f"   {_n(leads.get('rows', 0))} rows arrived from 4 sources (HubSpot, Salesforce, Pipedrive, "
        f"trade-show scans): {_n(leads.get('accepted', 0))} became leads, "
        f"{_n(leads.get('merged', 0))} were duplicates merged into an existing lead, "
        f"{_n(leads.get('rejected', 0))} were rejected with their reasons (kept, nothing lost)."
    )
    if truth:
        say(f"   (the generator planted: {', '.join(f'{k} {v}' for k, v in truth.items())})")
    say(
        f"   Every new lead got one owner, round robin, and {_n(leads.get('enrolled', 0))} "
        "were enrolled in the new-lead cadence."
    )
    say("")
    say("[bold]2. Qualify, and let go early[/]")
    say(f"   Leads disqualified by rule: {_join(report['disqualified_by_reason'])}.")
    say(f"   Leads released by an owner idle for 100 days: {_n(report['owners_released'])}.")
    say("")
    say("[bold]3. Close dead deals honestly[/]")
    say(f"   Deals now: {_join(report['deals'])}.")
    say(f"   Closed as lost by Nurture: {_join(report['lost_by_reason'].get('engine', {}))}.")
    say(f"   Closed as lost by people: {_join(report['lost_by_reason'].get('person', {}))}.")
    if report["lost_to_competitors"]:
        say(f"   Lost to competitors: {_join(report['lost_to_competitors'])}.")
    say(f"   Win rate: {_n(report['win_rate'])}.")
    say("")
    say("[bold]4. Come back[/]")
    say(f"   Follow-ups scheduled: {_join(report['followups_by_basis'])}.")
    say(
        f"   Follow-ups now: {_join(report['followups'])}; outcomes: {_join(report['followup_results'])}."
    )
    say(f"   Reopened opportunities: {_join(report['reopened_opportunities'])}.")
    say(
        "   (Wins arrive with the CRM export; the synthetic book has none after day one, "
        "so its win-back rate stays at 0.)"
    )
    say("")
    say("[bold]5. Email[/]")
    say(f"   Outbox: {_join(report['emails_by_status'])}.")
    say(f"   By template: {_join(report['emails_by_template'])}.")
    say("")
    say("[bold]6. Every decision on the record[/]")
    say(
        f"   {_n(report['daily_runs'])} daily runs made {_n(sum(report['decisions'].values()))} "
        f"decisions, each with its rule, facts and run: {_join(report['decisions'])}."
    )
    say("")
    render_summary(report, console)
    say(f"Finished in {seconds:.0f} s. Check any number against the store:")
    for what in ("leads", "opportunities", "emails", "decisions", "followups"):
        say(f"   nurture --database {database} export {what} --format csv")
