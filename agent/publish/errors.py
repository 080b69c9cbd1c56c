"""Errors of the publisher. One root, :class:`PublishError`; each carries the fields a caller needs."""

from __future__ import annotations

from heatgate.errors import HeatgateError

__all__ = ["ConnectError", "ConnectionLost", "NotConnected", "PublishError", "PublishRefused"]


class PublishError(HeatgateError):
    """Root of publisher errors."""


class ConnectError(PublishError):
    """The broker could not be reached or refused us. Never followed by a plaintext attempt."""

    def __init__(self, url: str, reason: str, *, reason_code: int | None = None, tls: bool = False) -> None:
        self.url = url
        self.reason = reason
        self.reason_code = reason_code
        self.tls = tls
        code = f" (reason code 0x{reason_code:02x})" if reason_code is not None else ""
        super().__init__(f"cannot connect to {url}: {reason}{code}")


class ConnectionLost(PublishError):
    """The connection dropped while a message was in flight; its records go again (same ids)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"connection lost: {reason}")


class NotConnected(PublishError):
    """``publish_raw`` was called while there is no connection."""

    def __init__(self) -> None:
        super().__init__("not connected to the broker")


class PublishRefused(PublishError):
    """The broker answered a PUBLISH with a reason code >= 0x80 (MQTT 5): the records are kept."""

    def __init__(self, topic: str, reason_code: int, reason: str) -> None:
        self.topic = topic
        self.reason_code = reason_code
        self.reason = reason
        super().__init__(f"broker refused publish to {topic!r}: 0x{reason_code:02x} {reason}")
