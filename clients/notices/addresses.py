"""E-mail addresses and host names: the checks and normalisation that the site list, contact discovery and
sending share."""

from __future__ import annotations

import contextlib
import re

__all__ = [
    "is_email",
    "lower_domain",
    "norm_host",
]

# Deliberately simple: catches typos and pasted URLs, not every RFC 5322 corner (quoted local parts are not used
# by abuse desks). The domain may be an IDN in Unicode.
_EMAIL_RE = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@(?:[^\s@.<>()\[\],;:\"]+\.)+"
                       r"(?:xn--[A-Za-z0-9-]+|[^\s@.<>()\[\],;:\"\d]{2,})$")


def is_email(value: str) -> bool:
    return bool(_EMAIL_RE.match(value)) and ".." not in value


def norm_host(host: str) -> str:
    """Lower-case, no trailing dot, IDN labels in Unicode (so "xn--3e0b707e" and "한국" compare equal)."""
    host = host.strip().rstrip(".").lower()
    labels = []
    for label in host.split("."):
        if label.startswith("xn--"):
            with contextlib.suppress(UnicodeError):  # keep a malformed label as given rather than fail
                label = label.encode("ascii").decode("idna")
        labels.append(label)
    return ".".join(labels)


def lower_domain(address: str) -> str:
    local, _, domain = address.rpartition("@")
    return f"{local}@{domain.lower()}"
