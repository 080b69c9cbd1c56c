"""Shared fixtures: real Mosquitto brokers, and a guard against leaked threads and processes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from heatgate.agent.devtools.localbroker import Broker, free_port
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


@pytest.fixture
def heatpump_sim() -> Iterator[int]:
    """`heatgate sim heatpump` as its own process on a free port, as an installer starts it."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "heatgate", "sim", "heatpump", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    first = process.stdout.readline().decode()
    assert "serving Modbus TCP" in first, first
    yield port
    process.terminate()
    process.wait(timeout=10)
    process.stdout.close()
