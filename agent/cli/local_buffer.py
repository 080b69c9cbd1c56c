"""What local commands share to work on the gateway's buffer beside a running agent: the config
and policy (:func:`load_local_setup`), the buffer opened as a local command with its privacy state,
pseudonym keys and a pipeline (:func:`with_local_buffer`), and one sentence for a busy buffer."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from heatgate.agent.cli.common import load_or_report, print_config_error
from heatgate.agent.cli.console import error_console
from heatgate.agent.config import Config
from heatgate.typedload import ConfigError

__all__ = ["LocalSetup", "busy_sentence", "load_local_setup", "print_error", "with_local_buffer"]


class LocalSetup:
    """The config and the privacy policy a local command opens the buffer with."""

    def __init__(self, config: Config, policy: Any) -> None:
        self.config = config
        self.policy = policy


def load_local_setup(args: argparse.Namespace) -> LocalSetup | None:
    """``--config``'s file and its policy, or None after printing the located error."""
    from heatgate.agent.privacy.policy import load_policy

    loaded = load_or_report(args.config)
    if loaded is None:
        return None
    try:
        policy = load_policy(loaded.config.policy_path)
    except ConfigError as exc:
        print_config_error(exc)
        return None
    return LocalSetup(loaded.config, policy)


def print_error(message: str) -> None:
    error_console().print(f"[bold red]error[/]: {message}")


async def with_local_buffer(setup: LocalSetup, work: Callable[[Any, Any, Any], Awaitable[int]]) -> int:
    """Open the buffer, the state, the keys and a pipeline; run ``work(buffer, state, pipeline)``."""
    from heatgate.agent.privacy.pipeline import Pipeline
    from heatgate.agent.privacy.pseudonym import PseudonymError, PseudonymKeys
    from heatgate.agent.privacy.state import PrivacyState, PrivacyStateError
    from heatgate.buffer.adapter import open_buffer
    from heatgate.buffer.errors import BufferBusy, BufferFault
    from heatgate.buffer.keys import load_master_key

    config = setup.config
    try:
        master_key = load_master_key(config.master_key_path, config.keys.master_key_credential)
        buffer = await open_buffer(
            config.buffer_path,
            master_key,
            cap_bytes=config.buffer.cap_bytes,
            commit_interval_s=0.0,
            cipher=config.buffer.cipher,
            retention_s=setup.policy.retention_s(),
            local_command=True,
        )
    except BufferBusy as exc:
        print_error(busy_sentence(exc))
        return 1
    except BufferFault as exc:
        print_error(f"cannot open the buffer {config.buffer_path}: {exc}")
        return 1
    finally:
        master_key = b""
    try:
        state = await PrivacyState.load(buffer)
        keys = await PseudonymKeys.load(buffer, epoch_days=config.privacy.pseudonym_epoch_days)
        pipeline = Pipeline(setup.policy, gateway=config.gateway, keys=keys, state=state)
        return await work(buffer, state, pipeline)
    except (PrivacyStateError, PseudonymError) as exc:
        print_error(exc.reason)
        return 1
    except BufferBusy as exc:
        print_error(busy_sentence(exc))
        return 1
    except BufferFault as exc:
        print_error(f"the buffer {config.buffer_path} failed: {exc}")
        return 1
    finally:
        with contextlib.suppress(BufferFault):
            await buffer.close()


def busy_sentence(exc: Any) -> str:
    return f"the buffer {exc.path} is busy ({exc.holder} kept it locked for {exc.waited_s:g} s); try again in a moment"
