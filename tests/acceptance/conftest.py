"""The acceptance suite runs the product as it ships: ``python -m heatgate run`` with the shipped
example config's settings (only ports and paths changed) and the shipped privacy policy,
against the simulators as their own processes and a real Mosquitto (heatgate.agent.devtools.shipped).

The simulators are shared by the whole session (started before the first test's leak guard
looks, so they are not taken for leaks); every test gets its own broker and gateway."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from heatgate.agent.devtools.shipped import ShippedRig, ShippedSims


@pytest.fixture(scope="session")
def shipped_sims(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShippedSims]:
    sims = ShippedSims(tmp_path_factory.mktemp("shipped-sims")).start()
    try:
        yield sims
    finally:
        sims.close()


@pytest.fixture
def shipped_rig(tmp_path: Path, shipped_sims: ShippedSims) -> Iterator[Callable[..., ShippedRig]]:
    """``shipped_rig(overrides={"mqtt": {...}})``: a started rig; stopped at teardown."""
    rigs: list[ShippedRig] = []

    def make(overrides: dict[str, dict[str, Any]] | None = None) -> ShippedRig:
        shipped_sims.wait_ready()  # a simulator that died in an earlier test fails here, by name
        rig = ShippedRig(tmp_path / f"rig-{len(rigs)}", shipped_sims, overrides=overrides or {})
        rigs.append(rig)
        return rig.start()

    yield make
    for rig in rigs:
        rig.close()
