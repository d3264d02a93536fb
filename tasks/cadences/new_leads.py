"""An import's new leads, enrolled in the new-lead cadences as each batch of them is stored.

Enrolling them after the import read them all back and wrote every enrolment at the end, when
the cleaning was over and one core sat idle; batch by batch the work overlaps the cleaning. A
lead's first step is timed from its start (its creation, never before the import) in its zone
(its phone's, else its country's). A later row of the same import may still date an undated
lead or give it a phone or a country: such leads are timed again at the end (``retime``), so
each is timed as it stands when the import commits, as if enrolled then.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy import update
from sqlalchemy.orm import Session

from tasks.cadences.enrolment import enrol_new_leads, first_due, lead_zone, timed_alike
from tasks.config.loader import NurtureConfig
from tasks.store.models import CadenceEnrolment
from tasks.store.upsert import among, id_slices

# (id, created_at, phone, country) of a new lead that has an address.
NewLead = tuple[int, dt.datetime, str | None, str | None]


@dataclass
class NewLeadEnrolment:
    """Enrols an import's new leads (``enrol``, once per lead) and counts them."""

    config: NurtureConfig
    as_of: dt.datetime
    run_id: int
    enrolled: int = 0

    def enrol(self, session: Session, leads: Iterable[NewLead]) -> None:
        """Enrol new leads that have an address in every new-lead cadence."""
        starts, zones = self._timing(leads)
        if not starts:
            return
        cadences = self.config.cadences
        for name, cadence in cadences.cadences.items():
            if cadence.enrol == "new_leads":
                self.enrolled += enrol_new_leads(
                    session,
                    starts,
                    name,
                    cadence,
                    self.config.sending,
                    run_id=self.run_id,
                    holidays=cadences.holidays_for(None),
                    zones=zones,
                )

    def retime(self, session: Session, leads: Iterable[NewLead]) -> None:
        """Time the first steps of leads enrolled by ``enrol`` again, from what they are now."""
        starts, zones = self._timing(leads)
        groups = timed_alike(starts, zones)
        cadences = self.config.cadences
        e = CadenceEnrolment
        for name, cadence in cadences.cadences.items():
            if cadence.enrol != "new_leads":
                continue
            for (start, zone), ids in groups.items():
                when = first_due(
                    start, cadence, self.config.sending, cadences.holidays_for(None), zone
                )
                for some in id_slices(session, ids):
                    session.execute(
                        update(e)
                        .where(
                            among(session, e.lead_id, some),
                            e.cadence == name,
                            e.run_id == self.run_id,
                            e.next_step == 0,
                        )
                        .values(enrolled_at=start, next_due_at=when)
                    )

    def _timing(
        self, leads: Iterable[NewLead]
    ) -> tuple[dict[int, dt.datetime], dict[int, ZoneInfo] | None]:
        """Each lead's start (its creation, never before the import) and, when sending is in
        the recipient's time, its zone."""
        rows = list(leads)
        # A lead starts its cadences on its creation date, never before the import itself.
        starts = {lead: max(at, self.as_of) for lead, at, _, _ in rows}
        sending = self.config.sending
        if sending.send_time_local is None:
            return starts, None
        return starts, {
            lead: lead_zone(phone, country, sending) for lead, _, phone, country in rows
        }
