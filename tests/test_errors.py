"""One error root: every exception class heatgate defines derives from HeatgateError, and no two
share a name (a caller reading ``except KeyFileError`` knows which one it is)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections import defaultdict

import msgspec

import heatgate
from heatgate.agent.commands.envelope import NestingTooDeep
from heatgate.agent.commands.errors import CommandError
from heatgate.agent.privacy.errors import PrivacyError
from heatgate.agent.publish.errors import PublishError
from heatgate.drivers.reading import DriverError
from heatgate.errors import HeatgateError
from heatgate.typedload import ConfigError


def _exception_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(heatgate.__path__, "heatgate."):
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue
        module = importlib.import_module(info.name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == info.name:
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return list(found.values())


def test_every_area_is_scanned() -> None:
    areas = {cls.__module__.split(".")[1] for cls in _exception_classes()}
    assert {"agent", "drivers", "typedload", "errors"} <= areas
    assert len(_exception_classes()) >= 40


def test_every_exception_derives_from_the_root() -> None:
    strays = [f"{c.__module__}.{c.__qualname__}" for c in _exception_classes() if not issubclass(c, HeatgateError)]
    assert strays == []


def test_no_two_exceptions_share_a_name() -> None:
    by_name: defaultdict[str, list[str]] = defaultdict(list)
    for cls in _exception_classes():
        by_name[cls.__name__].append(cls.__module__)
    assert {name: where for name, where in by_name.items() if len(where) > 1} == {}


def test_area_roots_are_distinct_branches() -> None:
    roots = [ConfigError, DriverError, PublishError, CommandError, PrivacyError]
    for root in roots:
        assert root.__bases__ == (HeatgateError,), root
    for one in roots:
        assert [other for other in roots if other is not one and issubclass(one, other)] == []


def test_nesting_too_deep_stays_a_msgspec_decode_error() -> None:
    exc = NestingTooDeep(40)
    assert isinstance(exc, msgspec.DecodeError) and isinstance(exc, CommandError)
    assert exc.depth == 40
