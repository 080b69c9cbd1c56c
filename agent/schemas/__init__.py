"""JSON Schemas of every published message type, generated from :mod:`agent.payloads`.

The ``*.json`` files beside this module ship with the package; ``python -m heatgate.agent.schemas --write``
regenerates them (``make schemas``) and ``--check`` fails if they differ from the types.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec

from heatgate.agent.payloads import SCHEMA_VERSION, STREAM_MESSAGES, StatePayload

__all__ = ["SCHEMA_DIR", "differing", "generate", "load_schema", "meaning", "schema_file_name", "shipped", "write"]

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
    files = {
        schema_file_name(stream): _render(stream, msgspec.json.schema(kind)) for stream, kind in STREAM_MESSAGES.items()
    }
    files[schema_file_name("state")] = _render("state", msgspec.json.schema(StatePayload))
    return files


def shipped() -> dict[str, str]:
    """The schema files installed with the package."""
    root = resources.files("heatgate.agent.schemas")
    return {entry.name: entry.read_text(encoding="utf-8") for entry in root.iterdir() if entry.name.endswith(".json")}


def meaning(text: str) -> Any:
    """A schema document as data, with each ``description`` reduced to its words.

    msgspec takes descriptions from docstrings and has changed how it dedents them between releases;
    two schemas that differ only in a description's line breaks or indentation mean the same.
    """

    def normalise(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                key: (" ".join(value.split()) if key == "description" and isinstance(value, str) else normalise(value))
                for key, value in node.items()
            }
        if isinstance(node, list):
            return [normalise(item) for item in node]
        return node

    return normalise(json.loads(text))


def differing(expected: dict[str, str], found: dict[str, str]) -> list[str]:
    """File names present in only one of the two sets, or whose schemas differ in meaning."""
    names = set(expected) | set(found)
    return sorted(
        name
        for name in names
        if name not in expected or name not in found or meaning(expected[name]) != meaning(found[name])
    )


def load_schema(kind: str) -> dict[str, Any]:
    """The shipped schema of a stream (or ``state``) as a dict."""
    text = resources.files("heatgate.agent.schemas").joinpath(schema_file_name(kind)).read_text(encoding="utf-8")
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
