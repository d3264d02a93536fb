"""JSON Schemas of the config files, generated from the pydantic models that validate them.

Written to ``config/schemas/`` and named from each YAML file's first line
(``# yaml-language-server: $schema=schemas/cadences.schema.json``), so editors with a YAML
language server autocomplete keys and flag errors as marketing types. ``nurture config
schema`` regenerates them; a test fails when the committed ones are out of date.
"""

from __future__ import annotations

import json
from pathlib import Path

from tasks.config.models import FILES

SCHEMA_DIR = "schemas"


def schema_name(file: str) -> str:
    return file.removesuffix(".yaml") + ".schema.json"


def schemas() -> dict[str, str]:
    """{schema file name: its JSON text}, stable (sorted keys) so a diff shows real changes."""
    out: dict[str, str] = {}
    for file, model in FILES.items():
        schema = model.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["title"] = f"Nurture {file}"
        out[schema_name(file)] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def write_schemas(config_dir: Path) -> list[Path]:
    target = config_dir / SCHEMA_DIR
    target.mkdir(exist_ok=True)
    written = []
    for name, text in schemas().items():
        path = target / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written


def modeline(file: str) -> str:
    return f"# yaml-language-server: $schema={SCHEMA_DIR}/{schema_name(file)}"
