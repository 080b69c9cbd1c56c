"""The crypto-compatibility fixture (tests/data/crypto-compat, read by tests/test_crypto_compat.py):
what it holds, and how it was made.

The committed fixture was written by heatgate before issue 20 (commit aa4911a, every primitive
from ``cryptography``), from an exported tree so that the old package is the one imported::

    git archive aa4911a | tar -x -C /tmp/heatgate-aa4911a
    cp tests/support/crypto_compat.py /tmp/heatgate-aa4911a/tests/support/
    cd /tmp/heatgate-aa4911a && /path/to/.venv/bin/python -m tests.support.crypto_compat OUT_DIR
    gzip -9 -n OUT_DIR/*.db   # the turnstile files are not part of it

Running it on today's code makes a fixture the test must equally accept.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from heatgate.agent.commands.envelope import encode_envelope
from heatgate.agent.commands.seal import seal
from heatgate.agent.commands.sign import sign_envelope
from heatgate.buffer.adapter import open_buffer
from heatgate.buffer.api import NewRecord

MASTER_KEY = bytes(range(32))
T0 = 1_750_000_000.0
RETENTION_S = {"service": 180 * 86400.0, "telemetry": 14 * 86400.0, "analytics": 730 * 86400.0}
STREAMS = (("service", "service/fault", 0), ("telemetry", "telemetry", 1), ("analytics", "analytics/heat-pump", 2))
STATE = {"consent.analytics": b'{"granted":true}', "command.nonces": b"\x00\x01binary\xff"}
RECIPIENT_RAW = bytes(range(100, 132))
SIGNER_RAW = bytes(range(200, 232))
EXPORT = b'{"records":[{"stream":"telemetry","value":21.5}]}'


def new_records() -> list[NewRecord]:
    out = []
    for n in range(12):
        stream, route, priority = STREAMS[n % 3]
        created_s = T0 + 10.0 * n
        rid = f"0000000000000000000000{n:04d}"
        out.append(
            NewRecord(
                id=rid,
                stream=stream,
                route=route,
                priority=priority,
                created_s=created_s,
                payload=json.dumps({"n": n, "t": created_s, "id": rid}).encode(),
            )
        )
    return out


async def write_buffer(path: Path, cipher: str) -> None:
    buffer = await open_buffer(
        path, MASTER_KEY, cap_bytes=1 << 20, cipher=cipher, retention_s=RETENTION_S, clock=lambda: T0 + 200.0
    )
    try:
        await buffer.put(new_records())
        for name, value in STATE.items():
            await buffer.set_state(name, value)
    finally:
        await buffer.close()


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for cipher in ("chacha20-poly1305", "aes-256-gcm"):
        asyncio.run(write_buffer(out / f"buffer-{cipher}.db", cipher))
    recipient = X25519PrivateKey.from_private_bytes(RECIPIENT_RAW)
    signer = Ed25519PrivateKey.from_private_bytes(SIGNER_RAW)
    envelope = sign_envelope(signer, target="gw-compat-0001", command="ping", issued_at=int(T0), nonce="A" * 22)
    blobs = {
        "sealed_export": base64.b64encode(seal(recipient.public_key(), EXPORT)).decode(),
        "signed_envelope": base64.b64encode(encode_envelope(envelope)).decode(),
    }
    (out / "blobs.json").write_text(json.dumps(blobs, indent=1) + "\n")


if __name__ == "__main__":
    main()
