"""Inbound Parse: a reply, threaded to its lead and email; auto-replies recorded, not counted.

SendGrid posts each inbound message as a form: ``headers`` (the raw header block), ``from``,
``to``, ``subject``, ``text``, ``envelope`` (JSON), ... A message is threaded to the email it
answers by, in order: the token in the reply-to address it was sent to (``replies+TOKEN@``),
the SendGrid message id in its ``In-Reply-To``/``References``, and last the sender's address
(the latest email to that lead). An automatic message (RFC 3834 ``Auto-Submitted``,
``X-Autoreply``, ``Precedence: auto_reply|bulk|list|junk``, an empty envelope sender, a
delivery report) is recorded as an ``auto_reply`` activity; a person's reply as ``reply``, which
ends the lead's cadences at once and, being a reply, resets its unanswered emails. The same
message posted twice (same Message-ID) is recorded once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.parser import HeaderParser
from email.utils import getaddresses, parseaddr

from sqlalchemy import select
from sqlalchemy.orm import Session

from tasks.cadences.enrolment import exit_enrolments
from tasks.email.tokens import read_email_token, token_in_address
from tasks.ingest.normalise import email_key
from tasks.store.models import (
    Activity,
    ActivityKind,
    Lead,
    LeadAlias,
    OutboxEmail,
)
from tasks.store.upsert import insert_ignore_returning

AUTOMATIC_PRECEDENCE = {"auto_reply", "bulk", "list", "junk"}
ROBOT_SENDERS = re.compile(r"^(mailer-daemon|postmaster|no-?reply|do-?not-?reply)@", re.I)
NOTES_LIMIT = 500  # of the subject and the first words: enough for a rep, not the whole mail


@dataclass(frozen=True)
class InboundResult:
    kind: ActivityKind | None  # None: not threaded to any lead
    lead_id: int | None
    email_id: int | None
    threaded_by: str | None  # "token", "in-reply-to", "sender"
    automatic_because: str | None
    recorded: bool  # False when the same message was already recorded


def automatic_reason(headers: Mapping[str, str], envelope_from: str | None) -> str | None:
    """Why a message is automatic (RFC 3834 and common practice), or None for a person."""
    lower = {k.lower(): v.strip() for k, v in headers.items()}
    auto = lower.get("auto-submitted", "").lower()
    if auto and auto != "no":
        return f"Auto-Submitted: {auto}"
    for name in ("x-autoreply", "x-autorespond", "x-auto-response-suppress"):
        if name in lower:
            return f"{name}: {lower[name]}"
    precedence = lower.get("precedence", "").lower()
    if precedence in AUTOMATIC_PRECEDENCE:
        return f"Precedence: {precedence}"
    if envelope_from is not None and envelope_from.strip() in ("", "<>"):
        return "empty envelope sender"
    content_type = lower.get("content-type", "").lower()
    if "multipart/report" in content_type:
        return "delivery report"
    sender = parseaddr(lower.get("from", ""))[1]
    if ROBOT_SENDERS.match(sender):
        return f"sent by {sender.split('@', 1)[0]}"
    return None


def record_inbound(session: Session, form: Mapping[str, str], *, now: dt.datetime) -> InboundResult:
    """Thread one Inbound Parse post and record it, in the caller's transaction."""
    headers = dict(HeaderParser().parsestr(form.get("headers", ""), headersonly=True).items())
    envelope = _envelope(form.get("envelope"))
    envelope_from = envelope.get("from") if envelope else None
    automatic = automatic_reason(
        headers, str(envelope_from or "") if envelope and "from" in envelope else None
    )
    recipients = [a for _, a in getaddresses([form.get("to", ""), headers.get("To", "")])]
    envelope_to = envelope.get("to") if envelope else None
    if isinstance(envelope_to, list):
        recipients += [str(a) for a in envelope_to]
    sender = parseaddr(form.get("from", "") or headers.get("From", ""))[1]
    email_id, lead_id, how = _thread(session, recipients, headers, sender)
    if lead_id is None:
        return InboundResult(None, None, None, None, automatic, False)
    kind = ActivityKind.AUTO_REPLY if automatic else ActivityKind.REPLY
    message_id = headers.get("Message-ID") or headers.get("Message-Id") or ""
    identity = (
        message_id.strip()
        or hashlib.sha256((form.get("headers", "") + form.get("text", "")).encode()).hexdigest()
    )
    notes = " ".join(f"{form.get('subject', '')} | {form.get('text', '')}".split())[:NOTES_LIMIT]
    inserted = insert_ignore_returning(
        session,
        Activity,
        [
            {
                "external_id": f"inbound:{identity}"[:128],
                "lead_id": lead_id,
                "kind": kind,
                "occurred_at": now,
                "email_id": email_id,
                "notes": notes,
            }
        ],
        ["external_id"],
        ["id"],
    )
    if inserted and kind is ActivityKind.REPLY:
        exit_enrolments(session, {lead_id}, "replied", now)
    return InboundResult(kind, lead_id, email_id, how, automatic, bool(inserted))


def _thread(
    session: Session, recipients: list[str], headers: Mapping[str, str], sender: str
) -> tuple[int | None, int | None, str | None]:
    for address in recipients:
        token = token_in_address(address)
        key = read_email_token(token) if token else None
        if key:
            row = session.execute(
                select(OutboxEmail.id, OutboxEmail.lead_id).where(OutboxEmail.dedupe_key == key)
            ).first()
            if row:
                return row.id, row.lead_id, "token"
    referenced = re.findall(
        r"<([^<>@\s]+)@[^<>\s]+>",
        " ".join(headers.get(h, "") for h in ("In-Reply-To", "References")),
    )
    # SendGrid's Message-ID is <X-Message-Id@host> (possibly with a suffix after a dot).
    candidates = {r.split(".", 1)[0] for r in referenced} | set(referenced)
    if candidates:
        row = session.execute(
            select(OutboxEmail.id, OutboxEmail.lead_id)
            .where(OutboxEmail.message_id.in_(sorted(candidates)))
            .order_by(OutboxEmail.id.desc())
        ).first()
        if row:
            return row.id, row.lead_id, "in-reply-to"
    if sender and "@" in sender:
        lead_id = _lead_of_address(session, sender)
        if lead_id is not None:
            latest = session.scalar(
                select(OutboxEmail.id)
                .where(OutboxEmail.lead_id == lead_id, OutboxEmail.sent_at.is_not(None))
                .order_by(OutboxEmail.sent_at.desc(), OutboxEmail.id.desc())
                .limit(1)
            )
            return latest, lead_id, "sender"
    return None, None, None


def _lead_of_address(session: Session, address: str) -> int | None:
    key = email_key(address)
    lead = session.execute(
        select(Lead.id, Lead.merged_into_id).where(Lead.email_key == key).order_by(Lead.id)
    ).first()
    if lead is None:
        alias = session.scalar(
            select(LeadAlias.lead_id)
            .where(LeadAlias.kind == "email", LeadAlias.key == key)
            .order_by(LeadAlias.id.desc())
            .limit(1)
        )
        return alias
    return lead.merged_into_id or lead.id


def _envelope(raw: str | None) -> dict[str, object] | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
