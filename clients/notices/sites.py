"""The site list: which site a URL belongs to (sites.example.yaml shows the file), and which law it is under."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from clients.notices.addresses import is_email, lower_domain, norm_host
from clients.notices.template_files import LANGUAGES, available_languages

__all__ = [
    "Site",
    "jurisdiction",
    "load_sites",
    "site_for",
]


@dataclass(frozen=True)
class Site:
    """What we know about a host. `jurisdiction` is "KR" for services under Korean law, "" when unknown."""

    host: str
    name: str = ""
    language: str | None = None
    abuse_contact: str | None = None
    jurisdiction: str = ""
    policy_url: str | None = None


_SITE_FIELDS = ("name", "language", "abuse_contact", "jurisdiction", "policy_url")


def load_sites(path: str | Path) -> dict[str, Site]:
    """Read a YAML mapping host -> fields (see sites.example.yaml) into Sites keyed by normalised host.

    Raises ValueError naming the file, the host and the field for anything that would later send a notice in the
    wrong language or to a malformed address.
    """
    path = Path(path)
    with path.open(encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a mapping of host -> site fields, got {type(data).__name__}")
    languages = set(LANGUAGES) | set(available_languages())
    sites: dict[str, Site] = {}
    for raw_host, fields in data.items():
        where = f"{path}: site {raw_host!r}"
        if not isinstance(raw_host, str) or not raw_host.strip() or re.search(r"[/:@\s]", raw_host.strip()):
            raise ValueError(f"{where}: the key must be a bare host name such as example.com (no scheme, port, path)")
        host = norm_host(raw_host)
        fields = {} if fields is None else fields
        if not isinstance(fields, Mapping):
            raise ValueError(f"{where}: expected a mapping of fields, got {type(fields).__name__}")
        unknown = sorted(set(fields) - set(_SITE_FIELDS))
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {', '.join(map(str, unknown))}; "
                             f"known: {', '.join(_SITE_FIELDS)}")
        values: dict[str, Any] = {}
        for name in _SITE_FIELDS:
            value = fields.get(name)
            if value is None:
                continue
            if not isinstance(value, str):
                raise ValueError(f"{where}, field {name!r}: expected a string, got {value!r}")
            values[name] = value.strip()
        if "language" in values and values["language"] not in languages:
            raise ValueError(f"{where}, field 'language': {values['language']!r} is not one of "
                             f"{', '.join(sorted(languages))}")
        if "abuse_contact" in values:
            address = values["abuse_contact"].removeprefix("mailto:")
            if not is_email(address):
                raise ValueError(f"{where}, field 'abuse_contact': {values['abuse_contact']!r} "
                                 "is not an e-mail address")
            values["abuse_contact"] = lower_domain(address)
        if "jurisdiction" in values:
            values["jurisdiction"] = values["jurisdiction"].upper()
            if values["jurisdiction"] and not re.fullmatch(r"[A-Z]{2}", values["jurisdiction"]):
                raise ValueError(f"{where}, field 'jurisdiction': expected a two-letter country code such as KR")
        if "policy_url" in values and not re.match(r"^https?://\S+$", values["policy_url"]):
            raise ValueError(f"{where}, field 'policy_url': {values['policy_url']!r} is not an http(s) URL")
        if host in sites:
            raise ValueError(f"{where}: duplicate host (after normalisation: {host})")
        sites[host] = Site(host=host, **values)
    return sites


def _url_host(url: str) -> str:
    parts = urlsplit(url.strip())
    if not parts.netloc:  # "www.example.com/path" without a scheme
        parts = urlsplit("//" + url.strip())
    return norm_host(parts.hostname or "")


def site_for(url: str, sites: Mapping[str, Site]) -> Site:
    """The configured Site for a URL's host, or for its nearest configured parent domain; else a bare Site(host)."""
    host = _url_host(url)
    labels = host.split(".")
    # Stop before the bare TLD: an entry for "kr" would be a configuration mistake, not a site.
    for i in range(max(len(labels) - 1, 1)):
        site = sites.get(".".join(labels[i:]))
        if site is not None:
            return site
    return Site(host=host)


_KR_TLDS = ("kr", "한국")
# Korean operators print these in the page footer (e-commerce and value-added telecom registration), even on .com.
_KR_OPERATOR_MARKERS = ("사업자등록번호", "부가통신사업", "통신판매업신고", "통신판매업 신고")


def jurisdiction(site: Site, page_html: str | None) -> str:
    """"KR" when the site is configured so, under .kr/.한국, or shows a Korean business registration; else the
    configured code or "" (unknown: the notice then cites the host's own policies)."""
    if site.jurisdiction:
        return site.jurisdiction.upper()
    host = norm_host(site.host)
    if host.rsplit(".", 1)[-1] in _KR_TLDS:
        return "KR"
    if page_html and any(marker in page_html for marker in _KR_OPERATOR_MARKERS):
        return "KR"
    return ""
