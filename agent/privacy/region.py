"""Region generalisation: the gateway's location as the coarsest region analytics needs.

A Dutch postcode (``"3511 AB"``, ``"3511ab"``, ``"3511"``) becomes its first one or two digits
(``"35"``). Any other value passes only if the policy's ``allow_pattern`` matches it in full
(ISO 3166-2 codes such as ``"NL-UT"`` by default); everything else, a street address above
all, becomes ``"unknown"``.
"""

from __future__ import annotations

import re

from heatgate.agent.privacy.policy import RegionPolicy

__all__ = ["UNKNOWN_REGION", "generalise_region"]

UNKNOWN_REGION = "unknown"
_POSTCODE = re.compile(r"^\s*([1-9][0-9]{3})\s*(?:[A-Za-z]{2})?\s*$")


def generalise_region(raw: str, policy: RegionPolicy) -> str:
    """The region analytics may carry for ``raw`` under ``policy``. Never returns ``raw``'s
    postcode letters or house-level detail."""
    match = _POSTCODE.match(raw)
    if match:
        return match.group(1)[: policy.postcode_digits]
    candidate = raw.strip()
    if policy.allow_pattern and re.fullmatch(policy.allow_pattern, candidate):
        return candidate
    return UNKNOWN_REGION
