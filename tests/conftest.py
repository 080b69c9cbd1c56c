"""Shared fixtures: real Mosquitto brokers, and a guard against leaked threads and processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from heatgate.agent.devtools.localbroker import Broker
from tests.support.leaks import child_pids, live_threads, settle


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves a thread or a child process behind."""
    threads_before = live_threads()
    children_before = child_pids()
    yield
    if request.node.get_closest_marker("allow_leaks"):
        return
    threads, children = settle(threads_before, children_before)
    problems = []
    if threads:
        problems.append(f"thread(s) left running: {threads}")
    if children:
        problems.append(f"child process(es) left running: {children}")
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Start brokers on free loopback ports; every one is stopped at teardown."""
    started: list[Broker] = []

    def make(mode: str = "plain", **kwargs: Any) -> Broker:
        broker = Broker(tmp_path / f"broker-{len(started)}", mode=mode, **kwargs)  # type: ignore[arg-type]
        broker.start()
        started.append(broker)
        return broker

    yield make
    for broker in started:
        broker.stop()


@pytest.fixture
def plain_broker(broker_factory: Callable[..., Broker]) -> Broker:
    return broker_factory("plain")


@pytest.fixture
def tls_broker(broker_factory: Callable[..., Broker]) -> Broker:
    return broker_factory("tls")


@pytest.fixture
def mtls_broker(broker_factory: Callable[..., Broker]) -> Broker:
    return broker_factory("mtls")
