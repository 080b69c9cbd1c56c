"""The daemon's import graph stays lean (issue 20): no installer or CLI libraries in `heatgate run`."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ("sqlite_utils", "rich", "click", "pluggy", "dateutil", "pygments", "pymodbus", "dsmr_parser")


def test_the_daemon_and_its_parts_import_no_cli_or_installer_library() -> None:
    """What `heatgate run` loads before any source is built: the daemon, its assembly, the buffer,
    the publisher. sqlite-utils, click, pluggy, dateutil never; drivers only per source (see
    tests/test_daemon_health.py)."""
    probe = (
        "import sys\n"
        "sys.modules['rich'] = None  # as `heatgate run` does (agent/cli/__init__.py)\n"
        "import heatgate.agent.cli.run, heatgate.agent.daemon, heatgate.agent.assembly\n"
        "import heatgate.buffer.adapter, heatgate.agent.publish.publisher\n"
        f"names = {FORBIDDEN!r}\n"
        "print(','.join(n for n in names if sys.modules.get(n) is not None) or '-')\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["-"], result.stdout


def test_the_p1_source_imports_no_decryption_library() -> None:
    """dsmr-parser's decryption path (dlms-cosem with asn1crypto and dateutil, and cryptography's
    ciphers) stays out of a daemon with a P1 source: heatgate reads only plain telegrams
    (heatgate/drivers/p1/dsmr.py)."""
    probe = (
        "import sys\n"
        "import heatgate.drivers.p1.source\n"
        "names = ('dlms_cosem', 'asn1crypto', 'dateutil', 'cryptography.hazmat.primitives.ciphers')\n"
        "print(','.join(n for n in names if sys.modules.get(n) is not None) or '-')\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["-"], result.stdout
