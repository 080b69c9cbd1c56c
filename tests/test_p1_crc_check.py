"""The P1 decoder checks a telegram's CRC as dsmr-parser does, on its own table-driven CRC.

The reference is dsmr-parser itself, with its own checksum validation on
(``TelegramParser(spec, apply_checksum_validation=True)``), not the simulator (whose CRC comes
from the same :mod:`heatgate.drivers.p1.crc`). For telegrams of every DSMR variant and their
mutations (a byte changed, a ``!`` or ``/`` added, the checksum cut, widened or made non-hex, the
head cut off), both give the same outcome: the same readings, or a checksum error (with the
expected and computed CRC of the telegram) or a parse error of the same cause."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from heatgate.drivers.p1.crc import crc16_arc
from heatgate.drivers.p1.dsmr import SPECS, InvalidChecksumError, TelegramParser
from heatgate.drivers.p1.errors import P1ChecksumError, P1ParseError
from heatgate.drivers.p1.telegram import P1Decoder, spec_for
from heatgate.drivers.sim.p1_telegram import MeterState, build_telegram

NOW = 1_700_000_000.0
VERSIONS = tuple(SPECS)


class _DsmrChecked(P1Decoder):
    """The decoder with dsmr-parser's own checksum validation instead of this project's."""

    def __init__(self, dsmr_version: str) -> None:
        super().__init__(dsmr_version, source="p1")
        self._parser = TelegramParser(spec_for(dsmr_version), apply_checksum_validation=True)
        self._checks_crc = False


def _outcome(decoder: P1Decoder, frame: bytes) -> tuple[Any, ...]:
    try:
        return ("ok", [(r.device, r.point, r.value, r.ts) for r in decoder.decode(frame, received_ts=NOW)])
    except P1ChecksumError as exc:
        return ("checksum", str(exc))  # dsmr-parser's words: the computed and the expected CRC
    except P1ParseError as exc:
        if isinstance(exc.__cause__, InvalidChecksumError):
            return ("checksum", str(exc.__cause__))
        return ("parse", type(exc.__cause__).__name__)


@st.composite
def _frames(draw: st.DrawFn) -> tuple[str, bytes]:
    version = draw(st.sampled_from(VERSIONS))
    frame = bytearray(build_telegram(version, MeterState(), NOW))
    bang = frame.rfind(b"!")
    how = draw(st.sampled_from(["as is", "byte", "bang", "slash", "cut crc", "crc", "head"]))
    at = draw(st.integers(0, len(frame) - 1))
    if how == "byte":
        frame[at] = draw(st.integers(0x20, 0x7E))
    elif how in ("bang", "slash"):
        frame[at:at] = b"!" if how == "bang" else b"/"
    elif how == "cut crc" and bang >= 0:
        del frame[bang + 1 + draw(st.integers(0, 3)) : len(frame) - 2]
    elif how == "crc" and bang >= 0:
        crc = draw(st.text(alphabet="0123456789ABCDEFGXYZ!", min_size=0, max_size=6))
        frame[bang + 1 : len(frame) - 2] = crc.encode()
    elif how == "head":
        del frame[: draw(st.integers(1, 4))]
    return version, bytes(frame)


@settings(max_examples=300, deadline=None)
@given(case=_frames())
def test_every_telegram_passes_or_fails_as_with_dsmr_parsers_own_check(case: tuple[str, bytes]) -> None:
    version, frame = case
    assert _outcome(P1Decoder(version, source="p1"), frame) == _outcome(_DsmrChecked(version), frame)


def test_a_checksum_error_carries_the_telegrams_crc_and_the_computed_one() -> None:
    frame = build_telegram("5", MeterState(), NOW, bad_crc=True)
    bang = frame.rindex(b"!")
    try:
        P1Decoder("5", source="p1").decode(frame, received_ts=NOW)
    except P1ChecksumError as exc:
        assert exc.expected == int(frame[bang + 1 : bang + 5], 16)
        assert exc.actual == crc16_arc(frame[: bang + 1]) == TelegramParser.crc16(frame[: bang + 1].decode())
        assert exc.expected != exc.actual
    else:
        raise AssertionError("a bad CRC was accepted")


def test_the_crc_is_checked_for_the_variants_that_have_one_and_only_those() -> None:
    for version in VERSIONS:
        frame = bytearray(build_telegram(version, MeterState(), NOW))
        has_crc = bool(spec_for(version)["checksum_support"])
        bang = frame.rfind(b"!")
        frame[bang - 3] ^= 0x01  # a digit of the last value, before the "!": the CRC no longer matches
        outcome = _outcome(P1Decoder(version, source="p1"), bytes(frame))
        assert (outcome[0] == "checksum") == has_crc, (version, outcome)
