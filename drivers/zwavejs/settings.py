"""Settings of a ``zwave-js`` source: where its Z-Wave JS server listens and the nodes it names."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from msgspec import Meta

from heatgate.drivers.zwave.settings import node_issues
from heatgate.settings import Name, PositiveSeconds, Section, SourceSettings
from heatgate.typedload import Issue

__all__ = ["ZwaveJsNode", "ZwaveJsSource"]

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class ZwaveJsNode(Section, frozen=True, kw_only=True):
    """A node as heatgate names it: readings carry ``name`` and ``device_type``, never the home id."""

    node_id: Annotated[int, Meta(ge=2, le=4000)]
    name: Name
    device_type: Name = "zwave-sensor"


class ZwaveJsSource(SourceSettings, tag="zwave-js", frozen=True, kw_only=True):
    """A Z-Wave network run by a Z-Wave JS server (``heatgate-zwave.service``) on loopback."""

    url: str = "ws://127.0.0.1:3000"
    nodes: list[ZwaveJsNode] = []
    reconnect_min_s: PositiveSeconds = 1.0
    reconnect_max_s: PositiveSeconds = 60.0
    request_timeout_s: PositiveSeconds = 30.0

    def issues(self, where: str) -> list[Issue]:
        """A ws:// URL on loopback (the server's API has no authentication); node ids and names unique."""
        issues: list[Issue] = []
        parts = urlsplit(self.url)
        if parts.scheme != "ws" or not parts.hostname:
            issues.append(Issue(f"{where}.url", f"{self.url!r} is not a ws://host:port URL"))
        elif parts.hostname not in LOOPBACK_HOSTS:
            issues.append(
                Issue(
                    f"{where}.url", f"host {parts.hostname!r} is not loopback: the Z-Wave JS API has no authentication"
                )
            )
        if self.reconnect_min_s > self.reconnect_max_s:
            issues.append(Issue(f"{where}.reconnect_min_s", "greater than reconnect_max_s"))
        issues.extend(node_issues(self.nodes, where))
        return issues
