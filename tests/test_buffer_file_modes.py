"""Every file of the buffer is 0600 whatever the umask (issue: -wal and -shm were 0644).

Run in a subprocess with umask 0o022, as a daemon started outside systemd (or a CLI run by an
installer) has: the database, its -wal and -shm while open, the turnstile, quarantined copies.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import asyncio, json, os, sys
    from pathlib import Path
    os.umask(0o022)
    from heatgate.buffer.adapter import open_buffer
    from heatgate.buffer.api import NewRecord

    db = Path(sys.argv[1])
    modes = {}

    def snapshot():
        for path in sorted(db.parent.iterdir()):
            modes.setdefault(path.name, set()).add(oct(path.stat().st_mode & 0o777))

    async def main():
        for _ in range(2):  # a fresh file, then opening it again
            buffer = await open_buffer(db, b"k" * 32, cap_bytes=1 << 20, commit_interval_s=0.0,
                                       retention_s={"telemetry": 86400.0})
            await buffer.put([NewRecord(id=os.urandom(8).hex(), stream="telemetry", route="telemetry",
                                        priority=5, created_s=1.7e9, payload=b"x" * 100)])
            snapshot()  # -wal and -shm exist while the buffer is open
            await buffer.close()
        snapshot()
        db.write_bytes(b"this is not a database" * 100)  # quarantined at the next open
        buffer = await open_buffer(db, b"k" * 32, cap_bytes=1 << 20, retention_s={"telemetry": 86400.0})
        snapshot()
        await buffer.close()
        snapshot()

    asyncio.run(main())
    print(json.dumps({name: sorted(m) for name, m in modes.items()}))
""")


def test_buffer_files_are_0600_under_umask_022(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(state / "buffer.db")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    modes: dict[str, list[str]] = json.loads(result.stdout.strip().splitlines()[-1])
    names = set(modes)
    assert {"buffer.db", "buffer.db-wal", "buffer.db-shm", "buffer.db-turnstile"} <= names, names
    assert any(name.startswith("buffer.db.corrupt-") for name in names), names
    assert {name: m for name, m in modes.items() if m != ["0o600"]} == {}
    for path in state.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_existing_wider_files_are_narrowed(tmp_path: Path) -> None:
    """A gateway upgraded from a version that left -wal/-shm 0644: narrowed at the next open."""
    state = tmp_path / "state"
    state.mkdir()
    db = state / "buffer.db"
    assert subprocess.run([sys.executable, "-c", SCRIPT, str(db)], capture_output=True, timeout=60).returncode == 0
    import sqlite3

    keep = sqlite3.connect(db)  # keeps -wal/-shm in place
    keep.execute("PRAGMA journal_mode = WAL").fetchone()
    keep.execute("SELECT count(*) FROM records").fetchone()
    for name in ("buffer.db", "buffer.db-wal", "buffer.db-shm"):
        (state / name).chmod(0o644)
    opener = textwrap.dedent("""
        import asyncio, sys
        from pathlib import Path
        from heatgate.buffer.adapter import open_buffer
        async def main():
            b = await open_buffer(Path(sys.argv[1]), b"k" * 32, cap_bytes=1 << 20, retention_s={"telemetry": 86400.0})
            await b.close()
        asyncio.run(main())
    """)
    try:
        assert subprocess.run([sys.executable, "-c", opener, str(db)], capture_output=True, timeout=60).returncode == 0
        for name in ("buffer.db", "buffer.db-wal", "buffer.db-shm"):
            path = state / name
            if path.exists():
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
    finally:
        keep.close()
