"""dsmr-parser's plain-telegram parser, imported without its decryption dependencies.

``dsmr_parser.parsers`` imports, at module level, what it needs to decrypt the encrypted
(DLMS general-global-cipher) telegrams of some Luxembourgish and Austrian meters:
``dlms_cosem`` (with attrs, asn1crypto and dateutil) and ``cryptography``. heatgate reads only
plain telegrams (none of the specifications in :data:`SPECS` is an encrypted one, and no key is
ever passed to the parser), yet those imports cost the daemon about 4 MiB of resident memory and
pull ``cryptography`` back into a process that otherwise does without it.

So, for the length of one import, the five names dsmr-parser takes from those packages are
stood in for: the cipher's tag keeps its real value (dsmr-parser compares the first byte of a
hex-looking telegram with it), everything else refuses to be used. The stand-ins are removed
from ``sys.modules`` straight after, so a later genuine import of ``cryptography`` or
``dlms_cosem`` gets the real packages. If that import fails (a dsmr-parser release that needs
more names, say), the real packages are imported instead: the parser always works, it only
costs the memory again; :data:`DECRYPTION_DEPENDENCIES_LOADED` tells which happened.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from heatgate.errors import HeatgateError

__all__ = [
    "DECRYPTION_DEPENDENCIES_LOADED",
    "GENERAL_GLOBAL_CIPHER_TAG",
    "SPECS",
    "EncryptedTelegramsUnsupported",
    "InvalidChecksumError",
    "ParseError",
    "TelegramParser",
]

GENERAL_GLOBAL_CIPHER_TAG = 219
"""dlms_cosem's ``GeneralGlobalCipher.TAG``: the first byte of an encrypted telegram."""


class EncryptedTelegramsUnsupported(HeatgateError):
    """Raised if dsmr-parser ever reaches its decryption path (heatgate never asks it to)."""


class _Refuses:
    def __init__(self, name: str) -> None:
        self._name = name

    def __call__(self, *_args: Any, **_kwargs: Any) -> Any:
        raise EncryptedTelegramsUnsupported(f"{self._name}: heatgate does not read encrypted P1 telegrams")

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        raise EncryptedTelegramsUnsupported(f"{self._name}.{attribute}: heatgate does not read encrypted P1 telegrams")


class _DlmsDecryptionError(HeatgateError):
    """Stands in for dlms_cosem's DecryptionError (only ever named in an ``except``)."""


class _GeneralGlobalCipher:
    TAG = GENERAL_GLOBAL_CIPHER_TAG

    @classmethod
    def from_bytes(cls, *_args: Any, **_kwargs: Any) -> Any:
        raise EncryptedTelegramsUnsupported("GeneralGlobalCipher: heatgate does not read encrypted P1 telegrams")


def _stand_ins() -> dict[str, dict[str, object]]:
    return {
        "cryptography.hazmat.primitives.ciphers": {
            "Cipher": _Refuses("Cipher"),
            "algorithms": _Refuses("algorithms"),
            "modes": _Refuses("modes"),
        },
        "dlms_cosem.connection": {"XDlmsApduFactory": _Refuses("XDlmsApduFactory")},
        "dlms_cosem.exceptions": {"DecryptionError": _DlmsDecryptionError},
        "dlms_cosem.protocol.xdlms": {"GeneralGlobalCipher": _GeneralGlobalCipher},
    }


@contextmanager
def _standing_in() -> Iterator[None]:
    placed: list[str] = []
    for name, attributes in _stand_ins().items():
        if name in sys.modules:  # the real package is already here: dsmr-parser gets it
            continue
        module = types.ModuleType(name, "heatgate stand-in: dsmr-parser's decryption path is not used")
        module.__dict__.update(attributes)
        sys.modules[name] = module
        placed.append(name)
    try:
        yield
    finally:
        for name in placed:
            del sys.modules[name]


def _import_parsers() -> tuple[types.ModuleType, types.ModuleType, bool]:
    if "dsmr_parser.parsers" not in sys.modules:
        try:
            with _standing_in():
                import dsmr_parser.parsers  # noqa: F401 - imported here, under the stand-ins
        except ImportError:
            for name in [n for n in sys.modules if n.startswith("dsmr_parser")]:
                del sys.modules[name]
    import dsmr_parser.parsers as parsers
    import dsmr_parser.telegram_specifications as specs

    return parsers, specs, parsers.GeneralGlobalCipher is not _GeneralGlobalCipher


_parsers, _specs, DECRYPTION_DEPENDENCIES_LOADED = _import_parsers()

from dsmr_parser.exceptions import InvalidChecksumError, ParseError  # noqa: E402 - after the parsers' import

TelegramParser = _parsers.TelegramParser

SPECS: dict[str, dict[str, Any]] = {
    "2.2": _specs.V2_2,
    "3": _specs.V3,
    "4": _specs.V4,
    "5": _specs.V5,
    "5B": _specs.BELGIUM_FLUVIUS,
    "5L": _specs.LUXEMBOURG_SMARTY,
    "5S": _specs.SWEDEN,
}
"""dsmr-parser's telegram specification for each config ``dsmr_version``: all plain ones."""
