"""JSON Schemas of every published message type, generated from :mod:`agent.payloads`.

The ``*.json`` files beside this module ship with the package; ``python -m agent.schemas --write``
regenerates them (``make schemas``) and ``--check`` fails if they differ from the types.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec

from agent.payloads import SCHEMA_VERSION, STREAM_MESSAGES, StatePayload

__all__ = ["SCHEMA_DIR", "generate", "load_schema", "schema_file_name", "shipped", "write"]

SCHEMA_DIR = Path(__file__).parent


def schema_file_name(kind: str) -> str:
    """``heatgate.<kind>.v<version>.json``; kind is a stream name or ``state``."""
    return f"heatgate.{kind}.v{SCHEMA_VERSION}.json"


def _render(kind: str, schema: dict[str, Any]) -> str:
    document = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://heatgate.invalid/schemas/{schema_file_name(kind)}",
        **schema,
    }
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def generate() -> dict[str, str]:
    """File name -> JSON text, for every message type."""
    files = {schema_file_name(stream): _render(stream, msgspec.json.schema(kind))
             for stream, kind in STREAM_MESSAGES.items()}
    files[schema_file_name("state")] = _render("state", msgspec.json.schema(StatePayload))
    return files


def shipped() -> dict[str, str]:
    """The schema files installed with the package."""
    root = resources.files("agent.schemas")
    return {entry.name: entry.read_text(encoding="utf-8") for entry in root.iterdir() if entry.name.endswith(".json")}


def load_schema(kind: str) -> dict[str, Any]:
    """The shipped schema of a stream (or ``state``) as a dict."""
    text = resources.files("agent.schemas").joinpath(schema_file_name(kind)).read_text(encoding="utf-8")
    result: dict[str, Any] = json.loads(text)
    return result


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write the generated files (and remove stale ones); return the paths written."""
    files = generate()
    for stale in directory.glob("heatgate.*.json"):
        if stale.name not in files:
            stale.unlink()
    paths = []
    for name, text in files.items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths
