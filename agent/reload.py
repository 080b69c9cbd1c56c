"""What ``systemctl reload heatgate`` (SIGHUP) applies, and what needs a restart.

A reload re-reads and validates, before changing anything:

- the config file (``--config``), for the privacy policy file it names;
- the privacy policy file: allow-lists, aggregation, windows, routes, consents, region level,
  priorities. Open aggregation windows are closed and committed under the old policy first;
- the privacy state (consent, objection, restriction) that ``heatgate privacy`` changed.

A file that does not validate changes nothing: the agent goes on with what it runs, logs the
located error and shows it as a problem in ``heatgate status`` until a reload succeeds.

Everything else in the config is read once at start and needs ``systemctl restart heatgate``:
the sources, the broker settings (``[mqtt]``), the keys, the buffer, the gateway id and region,
the status socket, the pseudonym epoch, and a policy's retention periods or set of streams
(the buffer's key epochs follow them). The log level is a command-line flag: a restart too.
A reload that finds such a change applies the rest and names the change as a problem until the
restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from heatgate.agent.config import Config, LoadedConfig, load_config
from heatgate.agent.privacy.policy import Policy, load_policy

__all__ = ["ReloadPlan", "config_restart_needed", "plan_reload", "policy_restart_needed"]


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """A validated reload: the new config and policy, and what of them only a restart applies."""

    loaded: LoadedConfig
    policy: Policy
    policy_changed: bool
    """The policy differs from the running one and can be applied now."""
    restart_needed: tuple[str, ...]


def plan_reload(config_path: Path, running: Config, running_policy: Policy) -> ReloadPlan:
    """Load and validate the config at ``config_path`` and the policy it names; raise
    :class:`agent.typedload.ConfigError` (every problem located) if either is bad."""
    loaded = load_config(config_path)
    policy = load_policy(loaded.config.policy_path)
    restart = config_restart_needed(running, loaded.config)
    policy_restart = policy_restart_needed(running_policy, policy)
    restart.extend(policy_restart)
    # A policy whose streams changed cannot run on the open buffer at all: keep the old one.
    applicable = not any(item.startswith("privacy policy streams") for item in policy_restart)
    changed = applicable and _plain(policy) != _plain(running_policy)
    return ReloadPlan(loaded=loaded, policy=policy, policy_changed=changed, restart_needed=tuple(restart))


def config_restart_needed(running: Config, new: Config) -> list[str]:
    """The config's settings that differ and that only a restart applies (the policy file's
    path is not one of them)."""
    old_doc, new_doc = _plain(running), _plain(new)
    found = []
    for key in sorted(set(old_doc) | set(new_doc)):
        old_value, new_value = old_doc.get(key), new_doc.get(key)
        if key == "privacy" and isinstance(old_value, dict) and isinstance(new_value, dict):
            for field in sorted(set(old_value) | set(new_value)):
                if field != "policy_file" and old_value.get(field) != new_value.get(field):
                    found.append(f"privacy.{field}")
        elif old_value != new_value:
            found.append(key)
    return found


def policy_restart_needed(running: Policy, new: Policy) -> list[str]:
    """The policy's changes that the open buffer cannot take without a restart."""
    if set(running.streams) != set(new.streams):
        return ["privacy policy streams (" + ", ".join(sorted(set(running.streams) ^ set(new.streams))) + ")"]
    old_retention, new_retention = running.retention_s(), new.retention_s()
    return [
        f"privacy policy retention of {stream}"
        for stream in sorted(new_retention)
        if old_retention.get(stream) != new_retention[stream]
    ]


def _plain(value: Any) -> dict[str, Any]:
    result = msgspec.to_builtins(value)
    assert isinstance(result, dict)
    return result
