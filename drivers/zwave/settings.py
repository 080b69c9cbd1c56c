"""Settings of a Z-Wave source (the controller's serial port) and the nodes it reports."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Protocol

from msgspec import Meta

from heatgate.settings import AbsPath, Name, Section, SourceSettings
from heatgate.typedload import Issue

__all__ = ["NamedNode", "ZwaveNode", "ZwaveSource", "node_issues"]


class ZwaveNode(Section, frozen=True, kw_only=True):
    node_id: Annotated[int, Meta(ge=1, le=232)]
    name: Name
    device_type: Name = "zwave-sensor"


class ZwaveSource(SourceSettings, tag="zwave", frozen=True, kw_only=True):
    port: AbsPath
    nodes: list[ZwaveNode] = []

    def issues(self, where: str) -> list[Issue]:
        """Node ids and names unique on this controller."""
        return node_issues(self.nodes, where)


class NamedNode(Protocol):
    """What a configured node of either Z-Wave source has in common."""

    @property
    def node_id(self) -> int: ...
    @property
    def name(self) -> str: ...


def node_issues(nodes: Sequence[NamedNode], where: str) -> list[Issue]:
    """Node ids and names unique on one controller, each duplicate located (``where.nodes[i]``)."""
    issues: list[Issue] = []
    node_ids: set[int] = set()
    names: dict[str, int] = {}
    for index, node in enumerate(nodes):
        if node.node_id in node_ids:
            issues.append(Issue(f"{where}.nodes[{index}].node_id", f"duplicate node id {node.node_id}"))
        node_ids.add(node.node_id)
        if node.name in names:
            also = f"{where}.nodes[{names[node.name]}]"
            issues.append(Issue(f"{where}.nodes[{index}].name", f"duplicate node name {node.name!r} (also {also})"))
        names.setdefault(node.name, index)
    return issues
