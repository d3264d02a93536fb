"""A suppression on any address a lead was seen with stops every email to the lead."""

from __future__ import annotations

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from tasks.config.loader import NurtureConfig
from tasks.email.senders import SendGridSender
from tasks.email.sending import send_due_emails
from tasks.store.models import EmailStatus, LeadAlias, OutboxEmail, Suppression, SuppressionReason
from tests.email.support import T0, QueueEmails
from tests.fake_sendgrid import FakeSendGrid


def test_an_aliased_address_that_unsubscribed_suppresses_the_merged_lead(
    engine: Engine,
    session: Session,
    config: NurtureConfig,
    queue_emails: QueueEmails,
    sendgrid_server: FakeSendGrid,
    sendgrid_sender: SendGridSender,
) -> None:
    merged, other = queue_emails(2)
    lead_id = session.get(OutboxEmail, merged).lead_id  # type: ignore[union-attr]
    # The lead was merged with a copy whose personal address had unsubscribed.
    session.add_all([
        LeadAlias(lead_id=lead_id, kind="email", value="kim.lee@gmail.com",
                  key="kimlee@gmail.com", created_at=T0),
        Suppression(email_key="kimlee@gmail.com", reason=SuppressionReason.UNSUBSCRIBED,
                    created_at=T0),
    ])  # fmt: skip
    session.commit()

    summary = send_due_emails(engine, sendgrid_sender, as_of=T0, config=config)

    assert (summary.suppressed, summary.sent) == (1, 1)
    with Session(engine) as check:
        status = dict(check.execute(select(OutboxEmail.id, OutboxEmail.status)).tuples().all())
    assert status == {merged: EmailStatus.SUPPRESSED, other: EmailStatus.SENT}
    assert [r.body["custom_args"]["nurture_email_id"] for r in sendgrid_server.accepted] == [
        str(other)
    ]
