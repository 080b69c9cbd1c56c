"""The building blocks of typed settings, shared by the agent's config and each driver's settings.

Each driver owns the settings of its sources (``heatgate.drivers.modbus.settings``, …): their
fields, their defaults and the checks across their entries. ``heatgate.agent.config`` composes
them into one ``Config`` and loads it with :mod:`heatgate.typedload`, which reports every problem
located by path (``sources[1].devices[0].unit_id: …``).
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct

from heatgate.typedload import ABSOLUTE_PATH, Issue

__all__ = ["AbsPath", "Name", "PositiveSeconds", "Section", "SourceSettings", "TcpPort"]

AbsPath = Annotated[str, ABSOLUTE_PATH]
Name = Annotated[
    str,
    Meta(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,47}$",
        description="a lowercase name of at most 48 characters: a-z, 0-9, '-' and '_', starting with a letter or digit",
    ),
]
PositiveSeconds = Annotated[float, Meta(gt=0, le=86400)]
TcpPort = Annotated[int, Meta(ge=1, le=65535)]


class Section(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of every settings table: frozen, keyword-only, unknown keys rejected."""


class SourceSettings(Section, tag_field="type", frozen=True, kw_only=True):
    """Base of a source's settings: one ``[[sources]]`` table, told apart by its ``type``.

    A driver's subclass sets ``tag="<type>"`` and may override :meth:`issues` with the checks
    across its entries that a type alone cannot express.
    """

    name: Name

    def issues(self, where: str) -> list[Issue]:
        """Problems of this source, located under ``where`` (e.g. ``sources[1]``); none by default."""
        return []
