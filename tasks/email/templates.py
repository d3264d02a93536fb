"""Email templates marketing writes: ``config/templates/NAME.txt``, a subject header and a body.

    subject: We'll stop here, {{ lead.first_name }}
    sendgrid_template: d-2c214ac919e84170b21855cc129b4a5f    (optional)
    ---
    Hi {{ lead.first_name }}, ...

With ``sendgrid_template`` the email is sent as that SendGrid dynamic template, with the same
variables as ``dynamic_template_data`` (``lead``, ``owner``, ``sender``, ``unsubscribe_url``,
...); the body here is still rendered, for the outbox and for previews.

Rendered with Jinja2's sandbox. Lead fields are passed as data, never spliced into template
source, so markup or ``{{ }}`` in a lead's name stays inert; the HTML part is autoescaped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError
from jinja2 import Template as JinjaTemplate
from jinja2.sandbox import SandboxedEnvironment

_TEXT_ENV = SandboxedEnvironment(
    autoescape=False, undefined=StrictUndefined, keep_trailing_newline=True
)
_HTML_ENV = SandboxedEnvironment(autoescape=True, undefined=StrictUndefined)


class TemplateError(Exception):
    def __init__(self, problems: list[tuple[str, int | None, str]]):
        self.problems = problems
        super().__init__("\n".join(f"{f}, line {line}: {m}" for f, line, m in problems))


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class Template:
    name: str
    path: Path
    subject: JinjaTemplate
    text: JinjaTemplate
    html: JinjaTemplate
    sendgrid_template: str | None = None

    def render(self, context: dict[str, Any]) -> Rendered:
        subject = " ".join(self.subject.render(context).split())
        return Rendered(
            subject=subject,
            text=self.text.render(context).strip() + "\n",
            html=self.html.render(context),
        )


def _html_source(body: str) -> str:
    # Paragraphs become <p>; the body's own text is escaped by autoescape at render time.
    paragraphs = [p.strip() for p in body.strip().split("\n\n") if p.strip()]
    return "".join(f"<p>{p.replace(chr(10), '<br>')}</p>\n" for p in paragraphs)


def parse_template(path: Path) -> Template:
    source = path.read_text(encoding="utf-8")
    head, sep, body = source.partition("\n---\n")
    if not sep or not head.lower().startswith("subject:"):
        raise TemplateError(
            [(str(path), 1, "expected 'subject: ...' then a line '---' then the body")]
        )
    first, *others = head.split("\n")
    subject_source = first.split(":", 1)[1].strip()
    sendgrid_template = None
    for number, line in enumerate(others, 2):
        name, colon, value = line.partition(":")
        if name.strip().lower() == "sendgrid_template" and colon:
            sendgrid_template = value.strip()
            if not re.fullmatch(r"d-[0-9a-f]{32}", sendgrid_template):
                raise TemplateError(
                    [(str(path), number, "sendgrid_template: expected d- and 32 hex digits")]
                )
        elif line.strip():
            raise TemplateError(
                [
                    (
                        str(path),
                        number,
                        f"unknown header {name.strip()!r} (subject, sendgrid_template)",
                    )
                ]
            )
    body_line = head.count("\n") + 3
    try:
        subject = _TEXT_ENV.from_string(subject_source)
    except TemplateSyntaxError as exc:
        raise TemplateError([(str(path), 1, f"subject: {exc.message}")]) from None
    try:
        text = _TEXT_ENV.from_string(body)
        html_t = _HTML_ENV.from_string(_html_source(body))
    except TemplateSyntaxError as exc:
        raise TemplateError(
            [(str(path), body_line + exc.lineno - 1, exc.message or "bad syntax")]
        ) from None
    return Template(path.stem, path, subject, text, html_t, sendgrid_template)


def load_templates(directory: Path) -> dict[str, Template]:
    templates: dict[str, Template] = {}
    problems: list[tuple[str, int | None, str]] = []
    if not directory.is_dir():
        raise TemplateError([(str(directory), None, "templates directory not found")])
    for path in sorted(directory.glob("*.txt")):
        try:
            templates[path.stem] = parse_template(path)
        except TemplateError as exc:
            problems.extend(exc.problems)
    if problems:
        raise TemplateError(problems)
    return templates
