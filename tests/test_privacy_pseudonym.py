"""Keyed pseudonyms: stable within epoch and stream, unlinkable across them, not reversible."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from heatgate.agent.privacy.pseudonym import STATE_KEY, PseudonymKeys
from tests.support.leaks import run_async
from tests.support.memory_state import MemoryState

EPOCH_S = 90 * 86400
T = 200 * EPOCH_S + 1000.0


def _load(store: MemoryState, now_s: float = T) -> PseudonymKeys:
    return run_async(PseudonymKeys.load(store, clock=lambda: now_s))


@settings(max_examples=50, deadline=None)
@given(st.text(min_size=1, max_size=40), st.floats(0, EPOCH_S - 1001))
def test_stable_within_epoch_and_stream_different_across(value: str, offset_s: float) -> None:
    keys = _load(MemoryState())
    a = keys.pseudonym("analytics", value, T)
    assert keys.pseudonym("analytics", value, T - 1000 + offset_s) == a  # same epoch
    assert keys.pseudonym("telemetry", value, T) != a  # another domain
    assert keys.pseudonym("analytics", value, T + EPOCH_S) != a  # next epoch
    assert keys.pseudonym("analytics", value + "x", T) != a
    assert len(a) == 26 and a.isalnum() and a == a.lower()


def test_persisted_keys_give_the_same_pseudonyms_after_a_restart() -> None:
    store = MemoryState()
    first = _load(store).pseudonym("analytics", "SN42", T)
    assert _load(store).pseudonym("analytics", "SN42", T) == first
    assert _load(MemoryState()).pseudonym("analytics", "SN42", T) != first  # another device
    assert b"SN42" not in store.values[STATE_KEY]


def test_advancing_destroys_the_past_epochs_key() -> None:
    store = MemoryState()
    old = _load(store).pseudonym("analytics", "SN42", T)
    later = _load(store, now_s=T + 2 * EPOCH_S)  # restart two epochs later: chain advanced and saved
    assert later.base_epoch("analytics") == later.epoch(T + 2 * EPOCH_S)
    assert later.pseudonym("analytics", "SN42", T) != old  # the old epoch's key is gone
    # The chain is one-way: the old key derives the new one, not the reverse.
    assert later.pseudonym("analytics", "SN42", T + 2 * EPOCH_S) == _load(store, T + 2 * EPOCH_S).pseudonym(
        "analytics", "SN42", T + 2 * EPOCH_S
    )


def test_dictionary_attack_without_the_key_finds_nothing() -> None:
    keys = _load(MemoryState())
    serials = [f"SN{n:05d}" for n in range(20000)]
    target = keys.pseudonym("analytics", "id:SN01234", T)
    wrong = _load(MemoryState())  # the attacker's best guess at a key: any other key
    assert all(wrong.pseudonym("analytics", f"id:{s}", T) != target for s in serials)
    unkeyed = {hashlib.sha256(f"id:{s}".encode()).hexdigest()[:32] for s in serials}
    assert target not in unkeyed
    assert keys.pseudonym("analytics", "id:SN01234", T) == target  # the key holder still can


def test_reset_makes_new_keys() -> None:
    store = MemoryState()
    before = _load(store).pseudonym("analytics", "SN1", T)
    after = run_async(PseudonymKeys.reset(store, clock=lambda: T)).pseudonym("analytics", "SN1", T)
    assert before != after
