"""The rights against the real encrypted buffer: objection, restriction, consent, export, erase."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from heatgate.agent.config import GatewayConfig
from heatgate.agent.privacy import rights
from heatgate.agent.privacy.pipeline import Pipeline
from heatgate.agent.privacy.pseudonym import PseudonymKeys
from heatgate.agent.privacy.state import PrivacyState
from heatgate.buffer.adapter import AsyncBuffer, open_buffer
from heatgate.drivers.reading import PointKind
from tests.support.leaks import run_async
from tests.support.privacy import T0, bodies, reading, shipped_policy

KEY = os.urandom(32)


async def _open(path: Path) -> tuple[AsyncBuffer, PrivacyState, Pipeline]:
    policy = shipped_policy()
    buffer = await open_buffer(
        path,
        KEY,
        cap_bytes=1 << 24,
        commit_interval_s=0.0,
        retention_s={k: 10 * 365 * 86400.0 for k in policy.retention_s()},
    )
    state = await PrivacyState.load(buffer)
    keys = await PseudonymKeys.load(buffer)
    return (
        buffer,
        state,
        Pipeline(policy, gateway=GatewayConfig(id="gw-test-1", region="3511 AB"), keys=keys, state=state),
    )


def _run(path: Path, work: Callable[[AsyncBuffer, PrivacyState, Pipeline], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        buffer, state, pipeline = await _open(path)
        try:
            return await work(buffer, state, pipeline)
        finally:
            await buffer.close()

    return run_async(main())


def _traffic(pipeline: Pipeline, serial: str = "SN-CANARY-0042") -> list[Any]:
    readings = [reading("serial_number", PointKind.IDENTIFIER, serial, T0)]
    readings += [reading("power_w", PointKind.MEASUREMENT, 100.0 + i, T0 + 60 * i) for i in range(10)]
    readings += [reading("fault_code", PointKind.FAULT, 9, T0 + 5)]
    return pipeline.process(readings) + pipeline.flush(force=True)


def test_objection_purges_the_queue_stops_intake_and_is_audited(tmp_path: Path) -> None:
    async def work(buffer: AsyncBuffer, state: PrivacyState, pipeline: Pipeline) -> None:
        await buffer.put(_traffic(pipeline))
        assert await buffer.count("analytics") > 0
        pipeline.process([reading("power_w", PointKind.MEASUREMENT, 1.0, T0 + 4000)])  # an open window
        records = await rights.apply_objection(buffer, state, pipeline, "analytics", "local-cli")
        assert await buffer.count("analytics") == 0
        audit = bodies(records)[0]
        assert audit["event"] == "privacy.object" and audit["actor"] == "local-cli" and audit["outcome"] == "done"
        assert audit["details"]["purged"] > 0 and audit["details"]["subject"] == "analytics"
        await buffer.put(_traffic(pipeline))  # intake stopped: nothing new
        assert await buffer.count("analytics") == 0 and await buffer.count("telemetry") > 0
        stored = await buffer.export_all()
        assert any(r.id == records[0].id for r in stored)  # the audit record is committed

    _run(tmp_path / "b.db", work)

    async def after_restart(buffer: AsyncBuffer, state: PrivacyState, pipeline: Pipeline) -> None:
        assert state.objected_streams() == frozenset({"analytics"})
        await buffer.put(_traffic(pipeline))
        assert await buffer.count("analytics") == 0
        await rights.apply_withdraw_objection(buffer, state, pipeline, "analytics", "remote:k1")
        await buffer.put(_traffic(pipeline, serial="SN-2"))
        assert await buffer.count("analytics") > 0

    _run(tmp_path / "b.db", after_restart)


def test_objection_to_a_contract_stream_is_refused_and_audited(tmp_path: Path) -> None:
    async def work(buffer: AsyncBuffer, state: PrivacyState, pipeline: Pipeline) -> None:
        with pytest.raises(rights.RightsRefused) as info:
            await rights.apply_objection(buffer, state, pipeline, "service", "local-cli")
        assert "not objectable" in info.value.reason
        assert state.objected_streams() == frozenset()
        stored = [bodies([r])[0] for r in await buffer.export_all() if r.stream == "security"]
        assert [(b["event"], b["outcome"]) for b in stored] == [("privacy.object", "refused")]

    _run(tmp_path / "b.db", work)


def test_restriction_holds_and_lifts(tmp_path: Path) -> None:
    async def work(buffer: AsyncBuffer, state: PrivacyState, pipeline: Pipeline) -> None:
        await rights.apply_restriction(buffer, state, pipeline, "telemetry", "local-cli")
        await buffer.put(_traffic(pipeline))
        taken = await buffer.take(1000, exclude_streams=state.restricted_streams())
        assert taken and all(r.stream != "telemetry" for r in taken)
        assert await buffer.count("telemetry") > 0  # stored, not published
        await buffer.release([r.id for r in taken])
        with pytest.raises(rights.RightsRefused):
            await rights.apply_restriction(buffer, state, pipeline, "security", "local-cli")
        await rights.apply_lift(buffer, state, pipeline, "telemetry", "local-cli")
        taken = await buffer.take(1000, exclude_streams=state.restricted_streams())
        assert any(r.stream == "telemetry" for r in taken)
        await buffer.release([r.id for r in taken])

    _run(tmp_path / "b.db", work)


def test_export_contains_exactly_what_is_stored_and_erase_leaves_nothing_readable(tmp_path: Path) -> None:
    db = tmp_path / "b.db"

    async def work(buffer: AsyncBuffer, state: PrivacyState, pipeline: Pipeline) -> None:
        await rights.apply_consent(buffer, state, pipeline, "p1-15min", "local-cli")
        records = _traffic(pipeline)
        await buffer.put(records)
        document = await rights.export_household(buffer, state, pipeline)
        stored = await buffer.export_all()
        assert [r["id"] for r in document["records"]] == [r.id for r in stored]
        assert {r.id for r in records} <= {r["id"] for r in document["records"]}
        assert [r["body"] for r in document["records"]] == bodies(list(stored))
        assert document["choices"]["consents"] == ["p1-15min"]
        assert set(document["register"]["streams"]) == set(pipeline.policy.streams)
        old_subject = next(r["body"]["subject"] for r in document["records"] if r["stream"] == "analytics")

        erased = await rights.apply_erase(buffer, state, pipeline, None, "local-cli")
        remaining = await buffer.export_all()
        assert [r.id for r in remaining] == [erased[0].id]  # only the erasure's own audit record
        assert bodies(erased)[0]["details"] == {"stream": "all", "removed": len(stored)}
        assert state.consents_given() == frozenset({"p1-15min"})  # choices survive an erasure
        new = _traffic(pipeline)
        assert old_subject not in {b.get("subject") for b in bodies(new)}  # new pseudonym keys

    _run(db, work)
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("b.db"))
    assert b"power_w" not in raw and b"SN-CANARY" not in raw and b"3511" not in raw


def test_erase_one_stream(tmp_path: Path) -> None:
    async def work(buffer: AsyncBuffer, state: PrivacyState, pipeline: Pipeline) -> None:
        await buffer.put(_traffic(pipeline))
        service = await buffer.count("service")
        await rights.apply_erase(buffer, state, pipeline, "telemetry", "local-cli")
        assert await buffer.count("telemetry") == 0 and await buffer.count("service") == service

    _run(tmp_path / "b.db", work)
