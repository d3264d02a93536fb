"""Ingest: read exports (``reader``), normalise lead rows (``normalise``), import leads with exact
dedupe (``leads``) and CRM deals and activities (``crm``). Plain functions over a Session: the
Prefect tasks that call them live in ``tasks.ingest_tasks``.
"""
