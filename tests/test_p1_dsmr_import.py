"""dsmr-parser imported without its decryption path: the same results, and the memory kept out.

Each side runs in a fresh interpreter (what a module imports is only visible there): one as the
daemon imports the P1 driver, with the stand-ins; one with dlms_cosem and cryptography's ciphers
imported first, so dsmr-parser gets the real packages. Both decode the same telegrams: the
simulator's telegram of every DSMR variant, the DSMR 5.0.2 companion standard's example
telegram, one with a bad CRC, and inputs that look like hex (dsmr-parser compares their first
byte with the general-global-cipher tag).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from heatgate.drivers.p1.crc import crc16_arc

# The example telegram of the DSMR 5.0.2 P1 companion standard (§ 6.12), CRC computed here.
_SPEC_EXAMPLE_BODY = (
    "/ISk5\\2MT382-1000\r\n\r\n1-3:0.2.8(50)\r\n0-0:1.0.0(101209113020W)\r\n"
    "0-0:96.1.1(4B384547303034303436333935353037)\r\n1-0:1.8.1(123456.789*kWh)\r\n"
    "1-0:1.8.2(123456.789*kWh)\r\n1-0:2.8.1(123456.789*kWh)\r\n1-0:2.8.2(123456.789*kWh)\r\n"
    "0-0:96.14.0(0002)\r\n1-0:1.7.0(01.193*kW)\r\n1-0:2.7.0(00.000*kW)\r\n0-0:96.7.21(00004)\r\n"
    "0-0:96.7.9(00002)\r\n1-0:99.97.0(2)(0-0:96.7.19)(101208152415W)(0000000240*s)"
    "(101208151004W)(0000000301*s)\r\n1-0:32.32.0(00002)\r\n1-0:52.32.0(00001)\r\n"
    "1-0:72.32.0(00000)\r\n1-0:32.36.0(00000)\r\n1-0:52.36.0(00003)\r\n1-0:72.36.0(00000)\r\n"
    "0-0:96.13.0(303132333435363738393A3B3C3D3E3F)\r\n1-0:32.7.0(220.1*V)\r\n"
    "1-0:52.7.0(220.2*V)\r\n1-0:72.7.0(220.3*V)\r\n1-0:31.7.0(001*A)\r\n1-0:51.7.0(002*A)\r\n"
    "1-0:71.7.0(003*A)\r\n1-0:21.7.0(01.111*kW)\r\n1-0:41.7.0(02.222*kW)\r\n"
    "1-0:61.7.0(03.333*kW)\r\n1-0:22.7.0(04.444*kW)\r\n1-0:42.7.0(05.555*kW)\r\n"
    "1-0:62.7.0(06.666*kW)\r\n0-1:24.1.0(003)\r\n0-1:96.1.0(3232323241424344313233343536373839)\r\n"
    "0-1:24.2.1(101209112500W)(12785.123*m3)\r\n!"
)
SPEC_EXAMPLE = f"{_SPEC_EXAMPLE_BODY}{crc16_arc(_SPEC_EXAMPLE_BODY.encode()):04X}\r\n"

_DECODE_ALL = """
import json, sys
{prelude}
from heatgate.drivers.p1 import dsmr
from heatgate.drivers.p1.telegram import P1Decoder
from heatgate.drivers.sim.p1_telegram import MeterState, build_telegram

frames = [(v, build_telegram(v, MeterState(), 1_700_000_000.0)) for v in dsmr.SPECS]
frames += [(v, build_telegram(v, MeterState(), 1_700_000_000.0, bad_crc=True)) for v in ("2.2", "5")]
frames += [(v, {spec_example!r}.encode()) for v in ("4", "5", "5B")]
frames += [(v, b"DB0840534D53" * 20) for v in ("5", "5L")]
out = []
for version, frame in frames:
    try:
        readings = P1Decoder(version, source="p1").decode(frame, received_ts=1.0)
        out.append(["ok", version, [repr(r) for r in readings]])
    except Exception as exc:
        out.append([type(exc).__name__, version, str(exc)])
heavy = ("dlms_cosem", "cryptography", "dateutil", "asn1crypto")
loaded = sorted({{n.split(".")[0] for n in sys.modules if n.startswith(heavy)}})
print(json.dumps({{"decoded": out, "flag": dsmr.DECRYPTION_DEPENDENCIES_LOADED, "loaded": loaded}}))
"""

_REAL_FIRST = "import dlms_cosem.connection, dlms_cosem.protocol.xdlms, cryptography.hazmat.primitives.ciphers"


def _decode_all(prelude: str) -> dict[str, object]:
    code = textwrap.dedent(_DECODE_ALL).format(prelude=prelude, spec_example=SPEC_EXAMPLE)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_the_parser_decodes_exactly_as_with_the_real_decryption_packages() -> None:
    standing_in = _decode_all("")
    real = _decode_all(_REAL_FIRST)
    assert standing_in["flag"] is False and standing_in["loaded"] == []
    assert real["flag"] is True and real["loaded"] == ["asn1crypto", "cryptography", "dateutil", "dlms_cosem"]
    assert standing_in["decoded"] == real["decoded"]
    decoded = standing_in["decoded"]
    assert isinstance(decoded, list)
    outcomes = {(kind, version) for kind, version, _ in decoded}
    assert ("ok", "5L") in outcomes and ("P1ChecksumError", "5") in outcomes  # both paths were taken
    spec_example = [readings for kind, version, readings in decoded if kind == "ok" and version == "5"][1]
    assert any("energy_delivered_t1_kwh" in r and "123456.789" in r for r in spec_example)
    assert any("gas" in r and "12785.123" in r for r in spec_example)


def test_the_stand_ins_leave_nothing_behind() -> None:
    code = """
import sys
from heatgate.drivers.p1 import dsmr
assert not any(n.startswith(("cryptography", "dlms_cosem")) for n in sys.modules), sorted(sys.modules)
from cryptography.hazmat.primitives.ciphers import Cipher
import dlms_cosem.protocol.xdlms as xdlms
assert isinstance(Cipher, type) and xdlms.GeneralGlobalCipher.TAG == dsmr.GENERAL_GLOBAL_CIPHER_TAG
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_decryption_path_refuses_with_a_sentence() -> None:
    code = """
from heatgate.drivers.p1 import dsmr
parser = dsmr.TelegramParser(dsmr.SPECS["5"])
parser.telegram_specification = dict(parser.telegram_specification, general_global_cipher=True)
try:
    parser.parse("DB08", encryption_key="00" * 16, authentication_key="00" * 16)
except dsmr.EncryptedTelegramsUnsupported as exc:
    print(exc)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert "does not read encrypted P1 telegrams" in done.stdout
