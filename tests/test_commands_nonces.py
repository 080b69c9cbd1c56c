"""The nonce store: a replay across a restart through the real encrypted buffer, bounded size,
expiry, and failing closed."""

from __future__ import annotations

from pathlib import Path

import pytest

from heatgate.agent.commands import reasons
from heatgate.agent.commands.dispatch import Response
from heatgate.agent.commands.envelope import encode_envelope
from heatgate.agent.commands.nonces import STATE_KEY, NonceStore, NonceStoreError
from heatgate.agent.commands.sign import sign_envelope
from heatgate.buffer.adapter import open_buffer
from heatgate.buffer.errors import BufferFault
from tests.support.commands import GATEWAY, NOW_S, Clock, Keys, answered, make_processor
from tests.support.leaks import run_async
from tests.support.memory_state import MemoryState

KEYS = Keys()
MASTER_KEY = bytes(range(32))
RETENTION_S = {"service": 180 * 86400.0, "security": 180 * 86400.0}


def signed(command: str = "status", *, issued_at: int = NOW_S, ttl_s: int = 300, **args: object) -> bytes:
    return encode_envelope(
        sign_envelope(KEYS.command, target=GATEWAY, command=command, args=dict(args), issued_at=issued_at, ttl_s=ttl_s)
    )


def agent_run(db: Path, raws: list[bytes], clock: Clock) -> list[Response]:
    """One agent lifetime: open the buffer, handle the envelopes, close."""

    async def main() -> list[Response]:
        buffer = await open_buffer(
            db, MASTER_KEY, cap_bytes=1 << 20, retention_s=RETENTION_S, clock=clock, commit_interval_s=0.02
        )
        try:
            processor, _, _, _ = await make_processor(buffer, KEYS, clock)
            return [await answered(processor, raw) for raw in raws]
        finally:
            await buffer.close()

    return run_async(main())


def test_replay_after_restart_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "buffer.db"
    clock = Clock()
    first, other = signed(), signed("privacy.object", stream="analytics")
    assert [r.outcome for r in agent_run(db, [first], clock)] == ["done"]
    clock.now_s += 100
    again = agent_run(db, [first, other], clock)
    assert [(r.outcome, r.reason) for r in again] == [("refused", reasons.REPLAYED), ("done", None)]
    nonce = first.split(b'"nonce":"')[1].split(b'"')[0]
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert nonce not in on_disk, "nonces are kept in the encrypted state, never in clear"


def test_nonces_are_forgotten_after_expiry_plus_skew() -> None:
    async def go() -> None:
        clock = Clock()
        state = MemoryState()
        store = await NonceStore.load(state, clock=clock)
        assert await store.remember("a" * 22, NOW_S + 10)
        assert not await store.remember("a" * 22, NOW_S + 10)
        clock.now_s = NOW_S + 11
        assert await store.remember("b" * 22, NOW_S + 400)
        assert len(store) == 1, "the expired nonce is dropped"
        reloaded = await NonceStore.load(state, clock=clock)
        assert reloaded.seen("b" * 22) and not reloaded.seen("a" * 22)

    run_async(go())


def test_bounded_store_evicts_earliest_and_refuses_below_its_floor() -> None:
    async def go() -> None:
        clock = Clock()
        state = MemoryState()
        store = await NonceStore.load(state, clock=clock, max_entries=3)
        for i in range(5):
            assert await store.remember(f"n{i}".ljust(22, "x"), NOW_S + 100 + i)
        assert len(store) == 3
        assert store.floor_s == NOW_S + 101, "the latest expiry evicted"
        # an evicted nonce (and anything expiring no later than the floor) cannot be vouched for
        assert not await store.remember("n0".ljust(22, "x"), NOW_S + 100)
        assert not await store.remember("fresh".ljust(22, "x"), NOW_S + 101)
        assert await store.remember("fresh".ljust(22, "x"), NOW_S + 500)
        reloaded = await NonceStore.load(state, clock=clock, max_entries=3)
        assert reloaded.floor_s == NOW_S + 102 and len(reloaded) == 3, "adding one more evicted the next"

    run_async(go())


def test_flooded_store_never_lets_an_evicted_envelope_replay() -> None:
    async def go() -> None:
        clock = Clock()
        processor, calls, _, _ = await make_processor(MemoryState(), KEYS, clock, max_entries=2)
        first = signed(issued_at=NOW_S - 10)
        assert (await answered(processor, first)).outcome == "done"
        for i in range(3):
            assert (await answered(processor, signed(issued_at=NOW_S + i))).outcome == "done"
        replay = await answered(processor, first)
        assert (replay.outcome, replay.reason) == ("refused", reasons.REPLAYED)
        assert len(calls.calls) == 4

    run_async(go())


class BrokenState(MemoryState):
    def __init__(self, *, fail_get: bool = False) -> None:
        super().__init__()
        self.fail_get = fail_get

    async def get_state(self, key: str) -> bytes | None:
        if self.fail_get:
            raise BufferFault("disk gone")
        return await super().get_state(key)

    async def set_state(self, key: str, value: bytes | None) -> None:
        raise BufferFault("disk full")


def test_unpersistable_nonce_means_the_command_does_not_run() -> None:
    async def go() -> None:
        processor, calls, audit, _ = await make_processor(BrokenState(), KEYS, Clock(), verified_per_min=1)
        raw = signed()
        response = await processor.handle(raw)
        assert response is not None
        assert (response.outcome, response.reason, response.command) == ("failed", reasons.STATE_UNAVAILABLE, "status")
        assert calls.calls == []
        assert [(a.outcome, a.reason) for a in audit.records] == [("failed", reasons.STATE_UNAVAILABLE)]
        # copies of it are replays (the nonce stays remembered in memory: fail closed), under the
        # signed-refusal budget
        copies = [await processor.handle(raw) for _ in range(3)]
        assert copies[0] is not None and copies[0].reason == reasons.REPLAYED
        assert copies[1:] == [None, None]
        await processor.close()
        summaries = [a.details["suppressed"] for a in audit.records if a.event == "command.refusals_suppressed"]
        assert summaries == [1, 1]  # one as soon as suppression starts, the rest at close

    run_async(go())


def test_unreadable_store_fails_closed() -> None:
    async def go() -> None:
        with pytest.raises(NonceStoreError):
            await NonceStore.load(BrokenState(fail_get=True))
        state = MemoryState()
        await state.set_state(STATE_KEY, b"not json")
        with pytest.raises(NonceStoreError, match="unreadable"):
            await NonceStore.load(state)

    run_async(go())
