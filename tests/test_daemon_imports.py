"""The daemon's import graph stays lean (issue 20): no installer or CLI libraries in `heatgate run`,
and no ``cryptography`` (its OpenSSL extension costs 8.6 MiB of RSS; the daemon's cryptography is
libsodium, :mod:`heatgate.sodium`) unless the buffer is configured for ``aes-256-gcm``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from heatgate.agent.commands.private_keys import generate_key_pair
from heatgate.agent.devtools.harness import Gateway
from heatgate.agent.devtools.localbroker import Broker

FORBIDDEN = (
    "sqlite_utils",
    "rich",
    "click",
    "pluggy",
    "dateutil",
    "pygments",
    "pymodbus",
    "dsmr_parser",
    "cryptography",
)
REPO = Path(__file__).resolve().parent.parent


def test_the_daemon_and_its_parts_import_no_cli_or_installer_library() -> None:
    """What `heatgate run` loads before any source is built: the daemon, its assembly, the buffer,
    the publisher, the command layer. sqlite-utils, click, pluggy, dateutil, cryptography never;
    drivers only per source (see tests/test_daemon_health.py)."""
    probe = (
        "import sys\n"
        "sys.modules['rich'] = None  # as `heatgate run` does (agent/cli/__init__.py)\n"
        "import heatgate.agent.cli.run, heatgate.agent.daemon, heatgate.agent.assembly\n"
        "import heatgate.buffer.adapter, heatgate.agent.publish.publisher\n"
        "import heatgate.agent.command_wiring, heatgate.agent.commands.wiring\n"
        f"names = {FORBIDDEN!r}\n"
        "print(','.join(n for n in names if sys.modules.get(n) is not None) or '-')\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["-"], result.stdout


def _agent_modules(tmp_path: Path, broker: Broker, *, sources_toml: str, cipher: str | None = None) -> list[str]:
    """Run `heatgate run` (through bench.agent_modules) with pinned command and approval keys until
    it is connected, stop it, and return the top-level packages it imported."""
    gateway = Gateway(tmp_path / "gw", broker_url=broker.url, sources_toml=sources_toml)
    for name in ("command", "approval"):  # placed before provisioning: provision pins them
        generate_key_pair(gateway.state / "keys", name)
    gateway.provision()
    config = gateway.config_path.read_text()
    assert 'command_public_key_file = "' in config and 'approval_public_key_file = "' in config
    if cipher is not None:
        gateway.config_path.write_text(config.replace("\n[buffer]\n", f'\n[buffer]\ncipher = "{cipher}"\n', 1))
    out = tmp_path / "modules.txt"
    log = tmp_path / "agent.log"
    with log.open("wb") as sink:
        gateway.process = subprocess.Popen(
            [sys.executable, "-m", "bench.agent_modules", str(out), "run", "--config", str(gateway.config_path)],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        gateway.wait_status(lambda s: bool(s["broker"].get("connected")), timeout_s=60, what="connected")
    finally:
        code = gateway.stop()
    assert code == 0, log.read_text()[-3000:]
    return out.read_text().split()


MODBUS_SOURCE = """
[[sources]]
type = "modbus-tcp"
name = "heatpump"
host = "127.0.0.1"
port = 9
  [[sources.devices]]
  name = "heatpump1"
  unit_id = 1
  profile = "sim-heatpump"
  interval_s = 1
"""


@pytest.mark.broker
@pytest.mark.slow
def test_the_running_daemon_imports_no_cryptography_with_the_default_cipher(
    tmp_path: Path, plain_broker: Broker
) -> None:
    """A Modbus source, pinned command keys, the default cipher: libsodium, no cryptography."""
    modules = _agent_modules(tmp_path, plain_broker, sources_toml=MODBUS_SOURCE)
    assert "nacl" in modules
    assert "cryptography" not in modules


@pytest.mark.broker
@pytest.mark.slow
def test_the_aes_256_gcm_cipher_brings_cryptography_in(tmp_path: Path, plain_broker: Broker) -> None:
    """Choosing aes-256-gcm costs the memory (docs/buffer.md): the cipher is cryptography's."""
    modules = _agent_modules(tmp_path, plain_broker, sources_toml=MODBUS_SOURCE, cipher="aes-256-gcm")
    assert "cryptography" in modules


def test_a_p1_source_imports_no_decryption_library() -> None:
    """The example config's P1 source, built as the daemon builds it: dsmr-parser's parsers are
    imported, its decryption path is not (dlms-cosem with asn1crypto and dateutil, cryptography's
    ciphers): heatgate reads only plain telegrams (heatgate/drivers/p1/dsmr.py)."""
    probe = (
        "import sys\n"
        "from heatgate.agent.assembly import build_source\n"
        "from heatgate.agent.config import load_config\n"
        "from heatgate.config import data_path\n"
        "sources = load_config(data_path('heatgate.example.toml')).config.sources\n"
        "build_source(next(s for s in sources if type(s).__name__ == 'P1Source'))\n"
        "names = ('dsmr_parser.parsers', 'cryptography', 'dlms_cosem', 'asn1crypto', 'dateutil')\n"
        "print(','.join(n for n in names if sys.modules.get(n) is not None))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["dsmr_parser.parsers"]
