"""The Z-Wave network's four security keys and the Z-Wave JS server's configuration file.

``heatgate provision`` calls :func:`write_server_config` once: it makes the S0 and three S2
network keys (16 random bytes each) and writes them, with the server's cache directory, as the
JSON file that ``heatgate-zwave.service`` hands to the server (``--config``; systemd passes it
in as a credential, so the server's own user never reads heatgate's key directory).

The file lives with the gateway's other keys and is backed up with them. Losing it means
re-including every securely included device: a new key is a new network to them.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

__all__ = ["KEY_NAMES", "SERVER_CONFIG_NAME", "read_network_keys", "write_server_config"]

KEY_NAMES = ("S0_Legacy", "S2_Unauthenticated", "S2_Authenticated", "S2_AccessControl")
SERVER_CONFIG_NAME = "zwave-server.json"
DEFAULT_CACHE_DIR = "/var/lib/heatgate-zwave"
"""The unit's StateDirectory: the server's network cache (node interviews, S2 sequence numbers)."""


def write_server_config(
    keys_dir: Path,
    *,
    cache_dir: str = DEFAULT_CACHE_DIR,
    force: bool = False,
    owner_ids: tuple[int, int] | None = None,
) -> tuple[Path, bool]:
    """Write ``keys_dir/zwave-server.json`` (mode 0600) unless it exists; (path, whether written).

    Existing keys are kept unless ``force``: replacing them orphans every secure device."""
    path = keys_dir / SERVER_CONFIG_NAME
    if path.exists() and not force:
        return path, False
    document = {
        "securityKeys": {name: secrets.token_bytes(16).hex() for name in KEY_NAMES},
        "storage": {"cacheDir": cache_dir},
        "logConfig": {"enabled": True, "level": "info", "logToFile": False},
        "emitValueUpdateAfterSetValue": True,
    }
    data = (json.dumps(document, indent=2) + "\n").encode()
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(temporary, 0o600)
    if owner_ids is not None:
        os.chown(temporary, *owner_ids)
    os.replace(temporary, path)
    return path, True


def read_network_keys(path: Path) -> dict[str, bytes]:
    """The four keys of a server config file (for checks and tests)."""
    document = json.loads(path.read_text())
    return {name: bytes.fromhex(document["securityKeys"][name]) for name in KEY_NAMES}
