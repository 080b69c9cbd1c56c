"""The audit log gives away nothing of the config: no hash of the file or of a value in it (the
postcode was recovered from the SHA-256 of the config in ``agent.start``), only which keys
changed; a refused reload names the located paths, never the refused values."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from heatgate.agent.config import Config, GatewayConfig
from heatgate.agent.devtools.harness import GATEWAY_ID, Gateway, wait_until
from heatgate.agent.devtools.localbroker import Broker
from heatgate.agent.devtools.subscriber import Received, Subscriber
from heatgate.agent.privacy.config_audit import config_change_details, refusal_reason, remote_status
from tests.support.dictionary import Published, attack, postcode_neighbourhood, postcode_spellings
from tests.support.leaks import run_async
from tests.support.memory_state import MemoryState

POSTCODE = "3511 AB"  # what the harness provisions


def _config(region: str = POSTCODE, **gateway: Any) -> Config:
    return Config(gateway=GatewayConfig(id="gw-audit-0001", region=region, **gateway))


def test_the_config_audit_names_changed_keys_only() -> None:
    store = MemoryState()
    first = run_async(config_change_details(store, _config()))
    assert first == {"config_first_seen": True, "config_keys_changed": 0, "config_changed": ""}
    same = run_async(config_change_details(store, _config()))
    assert same == {"config_first_seen": False, "config_keys_changed": 0, "config_changed": ""}
    moved = run_async(config_change_details(store, _config("3512 CD", timezone="Europe/Brussels")))
    assert moved["config_changed"] == "gateway.region, gateway.timezone"
    assert moved["config_keys_changed"] == 2 and moved["config_first_seen"] is False
    # What the device keeps to compare is keyed: no unkeyed digest of the postcode in it either.
    stored = Published(store.values.values())
    assert attack(stored, [POSTCODE, "3512 CD"], postcode_spellings) == []


def test_a_refused_reload_audits_paths_not_values() -> None:
    reason = (
        "/etc/heatgate/heatgate.toml: gateway.region: expected str of length <= 16, got str '3511 AB Utrecht "
        "Domplein 9'; sources[0].port: must be an absolute path, got 'dev/ttyUSB0'"
    )
    audited = refusal_reason(reason)
    assert audited == "/etc/heatgate/heatgate.toml: invalid at gateway.region, sources[0].port"
    assert "3511" not in audited and "Domplein" not in audited
    assert refusal_reason("privacy state: stored state unreadable: x") == "privacy state unreadable"


def _payloads(messages: list[Received]) -> list[bytes]:
    return [m.topic.encode() + b"\n" + m.payload for m in messages]


def _audits(messages: list[Received], event: str) -> list[dict[str, Any]]:
    found = []
    for message in messages:
        if not message.topic.endswith("/security/audit"):
            continue
        for record in json.loads(message.payload)["records"]:
            if record["body"]["event"] == event:
                found.append(record["body"])
    return found


@pytest.mark.broker
@pytest.mark.slow
def test_no_published_byte_gives_the_postcode_away_to_a_dictionary_attack(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker")
    broker.start()
    subscriber = Subscriber("127.0.0.1", broker.port, ["#"]).start()
    gateway = Gateway(tmp_path / "gw", broker_url=broker.url)
    try:
        gateway.provision()
        template = gateway.config_path.read_text()
        assert POSTCODE in template
        gateway.start()

        def messages() -> list[Received]:
            with subscriber._cond:
                return list(subscriber.messages)

        wait_until(lambda: _audits(messages(), "agent.start"), timeout_s=60, what="the agent.start audit")
        os.kill(gateway.pid, signal.SIGHUP)  # a reload: audited too
        wait_until(lambda: _audits(messages(), "agent.reload"), timeout_s=60, what="the agent.reload audit")
        assert gateway.stop() == 0, gateway.log_tail()

        # The postcode changes: the next start says which key changed, and nothing more.
        moved = template.replace(POSTCODE, "3512 CD")
        gateway.config_path.write_text(moved)
        gateway.start()
        wait_until(lambda: len(_audits(messages(), "agent.start")) == 2, timeout_s=60, what="the 2nd agent.start")
        wait_until(lambda: _audits(messages(), "agent.stop"), timeout_s=30, what="the 1st run's agent.stop")
        assert gateway.stop() == 0, gateway.log_tail()
    finally:
        gateway.close()
        subscriber.stop()
        broker.stop()

    published = messages()
    index = Published(_payloads(published))
    assert index.size_bytes > 0

    def preimages(candidate: str) -> list[bytes]:
        # The value in its spellings, and the config file as provision writes it, with either
        # postcode of the two runs replaced by the candidate.
        return [
            *postcode_spellings(candidate),
            template.replace(POSTCODE, candidate).encode(),
            moved.replace("3512 CD", candidate).encode(),
        ]

    for planted in (POSTCODE, "3512 CD"):
        candidates = postcode_neighbourhood(planted, digit_radius=5)
        assert planted in candidates
        hits = attack(index, candidates, preimages, hmac_keys=[b"", GATEWAY_ID.encode()])
        assert hits == [], f"recovered from published bytes: {hits}"

    starts = _audits(published, "agent.start")
    assert starts[0]["details"]["config_first_seen"] is True
    assert starts[1]["details"]["config_changed"] == "gateway.region"
    assert _audits(published, "agent.reload")[0]["details"]["config_keys_changed"] == 0


def test_the_remote_status_answer_carries_no_refused_value() -> None:
    error = "/etc/heatgate/heatgate.toml: gateway.region: expected str of length <= 16, got str '3511 AB Domplein 9'"
    snapshot: dict[str, Any] = {
        "healthy": False,
        "problems": [f"reload refused, running on the previous settings: {error}", "broker: not connected"],
        "reload": {"reloads": 1, "error": error},
    }
    answered = remote_status(snapshot)
    assert "3511" not in json.dumps(answered)
    assert answered["reload"]["error"] == "/etc/heatgate/heatgate.toml: invalid at gateway.region"
    assert answered["problems"][1] == "broker: not connected"
    assert snapshot["reload"]["error"] == error  # the local status keeps the whole text
    assert remote_status({"reload": {"error": None}}) == {"reload": {"error": None}}
