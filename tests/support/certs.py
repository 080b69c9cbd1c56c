"""The tests' PKI is the demo's (agent/pki.py): a CA, a loopback broker certificate, client certificates."""

from heatgate.agent.devtools.pki import Pki, issue, make_ca, make_pki

__all__ = ["Pki", "issue", "make_ca", "make_pki"]
