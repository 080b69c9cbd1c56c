"""ChaCha20-Poly1305 seal + open per record: libsodium (heatgate.sodium, what the buffer uses
since issue 20) against cryptography's (the baseline, what it used before), in the same process.

    .venv/bin/python -m bench.bench_aead            # ~10 s
    .venv/bin/python -m bench.bench_aead --rounds 7

Per payload size: records per second of ``encrypt`` then ``decrypt`` with a fresh random nonce
and 60 bytes of associated data (a buffer record's), best of the rounds, the two implementations
alternating within each round. Prints figures and the ratio sodium / cryptography; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305 as Reference

from heatgate.sodium import ChaCha20Poly1305

SIZES_BYTES = (64, 160, 1024, 16384)
AD = os.urandom(60)


def records_per_s(aead: object, payload: bytes, count: int) -> float:
    encrypt: Callable[[bytes, bytes, bytes], bytes] = aead.encrypt  # type: ignore[attr-defined]
    decrypt: Callable[[bytes, bytes, bytes], bytes] = aead.decrypt  # type: ignore[attr-defined]
    nonces = [os.urandom(12) for _ in range(count)]
    start = time.perf_counter()
    for nonce in nonces:
        decrypt(nonce, encrypt(nonce, payload, AD), AD)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.2, help="per measurement, roughly")
    args = parser.parse_args()
    key = os.urandom(32)
    ours, reference = ChaCha20Poly1305(key), Reference(key)
    with open("/proc/loadavg") as handle:
        print(f"load average {handle.read().split()[0]}; best of {args.rounds} rounds")
    print(f"{'payload':>8} {'cryptography rec/s':>19} {'libsodium rec/s':>16} {'ratio':>6}")
    for size in SIZES_BYTES:
        payload = os.urandom(size)
        count = max(200, int(args.seconds * records_per_s(reference, payload, 200)))
        best = {"reference": 0.0, "ours": 0.0}
        for _ in range(args.rounds):
            best["reference"] = max(best["reference"], records_per_s(reference, payload, count))
            best["ours"] = max(best["ours"], records_per_s(ours, payload, count))
        ratio = best["ours"] / best["reference"]
        print(f"{size:>8} {best['reference']:>19,.0f} {best['ours']:>16,.0f} {ratio:>6.2f}")


if __name__ == "__main__":
    main()
