"""What a config names on this machine: the files, serial ports and directories it refers to.

``heatgate check-config`` runs these after the checks of the file itself (and skips them with
``--offline``, for a config checked before it is shipped). They work on the parsed TOML, not on
the typed :class:`~heatgate.agent.config.Config`, so that a file with other problems still has
every reference checked in the same run. Each problem is located where the file names the
thing: ``mqtt.ca_file: /etc/heatgate/ca.pem: no such file``.

Readability is judged for the user running the check: README has installers run it as the
service user (``sudo -u heatgate heatgate check-config …``), who is the one that must read them.
"""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeGuard

from heatgate.typedload import Issue

__all__ = ["machine_issues", "missing_profile_files"]

FILE_KEYS = (
    ("mqtt", "ca_file"),
    ("mqtt", "cert_file"),
    ("mqtt", "key_file"),
    ("mqtt", "password_file"),
    ("keys", "master_key_file"),
    ("keys", "command_public_key_file"),
    ("keys", "approval_public_key_file"),
    ("privacy", "policy_file"),
)
"""``(table, key)`` of every file a config may name (each one optional)."""

SERIAL_SOURCE_TYPES = frozenset({"modbus-rtu", "p1", "zwave"})
"""Source types whose ``port`` is a serial device."""


def machine_issues(data: Mapping[str, Any]) -> list[Issue]:
    """Every file, serial port and directory the config names that is missing or unusable here."""
    issues: list[Issue] = []
    for table, key in FILE_KEYS:
        value = _table(data, table).get(key)
        if _is_abs(value):
            problem = _file_problem(Path(value))
            csr = Path(value).with_suffix(".csr")
            if problem == "no such file" and key == "cert_file" and csr.is_file():
                problem += f" (have the broker's CA sign {csr} and put the certificate here)"
            if problem:
                issues.append(Issue(f"{table}.{key}", f"{value}: {problem}"))
    state_dir = _table(data, "gateway").get("state_dir", "/var/lib/heatgate")
    if _is_abs(state_dir):
        problem = _dir_problem(Path(state_dir))
        if problem:
            issues.append(Issue("gateway.state_dir", f"{state_dir}: {problem}"))
    for where, port in _serial_ports(data):
        problem = _serial_problem(Path(port))
        if problem:
            issues.append(Issue(where, f"{port}: {problem}"))
    for where, profile in missing_profile_files(data):
        issues.append(Issue(where, f"{profile}: no such file"))
    return issues


def missing_profile_files(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(location, path)`` of each Modbus device profile named by an absolute path that does not
    exist on this machine: a machine problem, not one of the file (``--offline`` accepts it)."""
    missing: list[tuple[str, str]] = []
    for index, source in _sources(data):
        devices = source.get("devices")
        if not isinstance(devices, list):
            continue
        for number, device in enumerate(devices):
            profile = device.get("profile") if isinstance(device, Mapping) else None
            if _is_abs(profile) and not Path(profile).exists():
                missing.append((f"sources[{index}].devices[{number}].profile", profile))
    return missing


def _table(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    table = data.get(name)
    return table if isinstance(table, Mapping) else {}


def _is_abs(value: object) -> TypeGuard[str]:
    """An absolute path the OS can be asked about (a NUL byte makes ``os.stat`` raise)."""
    return isinstance(value, str) and value.startswith("/") and "\x00" not in value


def _sources(data: Mapping[str, Any]) -> Iterator[tuple[int, Mapping[str, Any]]]:
    sources = data.get("sources")
    if isinstance(sources, list):
        for index, source in enumerate(sources):
            if isinstance(source, Mapping):
                yield index, source


def _serial_ports(data: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    for index, source in _sources(data):
        port, source_type = source.get("port"), source.get("type")
        # The file is not validated yet: the type may be any TOML value (a list is not hashable).
        if isinstance(source_type, str) and source_type in SERIAL_SOURCE_TYPES and _is_abs(port):
            yield f"sources[{index}].port", port


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def _stat(path: Path) -> os.stat_result | str:
    """The file's status, or what stops us from seeing it."""
    try:
        return path.stat()
    except FileNotFoundError:
        return "no such file"
    except NotADirectoryError:
        return "no such file (a parent is not a directory)"
    except PermissionError:
        return f"permission denied: {_user()} cannot enter a directory on its path"
    except OSError as exc:
        return exc.strerror or str(exc)


def _file_problem(path: Path) -> str:
    info = _stat(path)
    if isinstance(info, str):
        return info
    if stat.S_ISDIR(info.st_mode):
        return "is a directory, expected a file"
    if not os.access(path, os.R_OK):
        return f"not readable by {_user()} (mode {stat.S_IMODE(info.st_mode):04o}, owner uid {info.st_uid})"
    return ""


def _dir_problem(path: Path) -> str:
    info = _stat(path)
    if isinstance(info, str):
        return info.replace("no such file", "no such directory") + (
            " (`heatgate provision --state-dir …` creates it)" if info == "no such file" else ""
        )
    if not stat.S_ISDIR(info.st_mode):
        return "not a directory"
    return ""


def _serial_problem(path: Path) -> str:
    info = _stat(path)
    if info == "no such file":
        return "no such device (is the adapter plugged in? `ls -l /dev/serial/by-id/` lists the connected ones)"
    if isinstance(info, str):
        return info
    if not stat.S_ISCHR(info.st_mode):
        return "not a serial device (expected a character device such as /dev/ttyUSB0)"
    if not os.access(path, os.R_OK | os.W_OK):
        return f"{_user()} cannot open it for reading and writing (the service user needs the dialout group)"
    return ""
