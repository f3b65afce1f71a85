"""What a notice says: the items and their evidence, the legal basis for the site's jurisdiction, rendered from
the language's template (Jinja2, sandboxed)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from clients.notices.mail import Sender
from clients.notices.sites import Site
from clients.notices.template_files import load_template
from jiwoom.shared.times import KST

__all__ = [
    "NoticeItem",
    "render_notice",
]

KINDS = ("ncii", "youth")
EXPOSED_KINDS = ("name", "phone", "handle", "email", "place", "rrn", "messenger")  # as sighting_exposures has them
# Where the GDPR applies (the EU and the rest of the EEA): its art. 17 right to erasure is the removal ground there.
GDPR_JURISDICTIONS = frozenset({
    "EU", "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "EL", "HU", "IE", "IT", "LV", "LT",
    "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE", "IS", "LI", "NO"})


@dataclass(frozen=True)
class NoticeItem:
    """One piece of content to take down, with the evidence captured for it. Datetimes must be timezone-aware."""

    page_url: str
    media_url: str
    title: str
    posted_at: datetime | None
    captured_at: datetime
    hashes: dict[str, str]  # artefact kind ("screenshot", "warc", "media") -> sha256 hex
    # "match" (the victim's imagery), "under_19", or "personal_info": a post that only exposes personal information
    reason: str = "match"
    exposed: tuple[str, ...] = ()  # kinds of personal information the post shows (EXPOSED_KINDS), never values


_HASH_ORDER = ("screenshot", "warc", "media")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# Sandboxed: the templates are data files that officers edit, not code.
_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, trim_blocks=True,
                            lstrip_blocks=True, keep_trailing_newline=False)


def _render(source: str, context: Mapping[str, Any], where: str) -> str:
    try:
        return _ENV.from_string(source).render(context)
    except jinja2.TemplateError as e:  # name the file and key: the officer editing it needs to know where
        raise ValueError(f"notice template {where}: {e}") from e


def _one_line(value: str, limit: int | None = 500) -> str:
    """User-supplied text on a single line: a title with newlines must not fake lines of the notice."""
    value = " ".join("".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in value).split())
    return value if limit is None or len(value) <= limit else value[: limit - 1] + "…"


def _aware(value: datetime | None, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise ValueError(f"{what} must be a datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        # A naive time from a Korean board is KST, from elsewhere anything: guessing would falsify evidence.
        raise ValueError(f"{what} must be timezone-aware, got {value.isoformat()}")
    return value


def _format_time(value: datetime, labels: Mapping[str, Any], where: str) -> str:
    """'<KST> KST (<UTC> UTC)' with each half in the language's date format."""
    names = labels.get("month_names")

    def one(moment: datetime) -> str:
        context = {"year": moment.year, "month": moment.month, "day": moment.day,
                   "month_name": names[moment.month - 1] if names else str(moment.month),
                   "time": moment.strftime("%H:%M:%S")}
        return _render(labels["datetime_format"], context, f"{where} labels.datetime_format")

    return f"{one(value.astimezone(KST))} KST ({one(value.astimezone(UTC))} UTC)"


def render_notice(language: str, site: Site, items: list[NoticeItem], *, kind: str, sender: Sender,
                  reference: str, jurisdiction: str, templates_dir: Path | None = None) -> tuple[str, str]:
    """(subject, body) of a plain-text takedown notice for `items` on `site`, in `language`.

    kind is "ncii" (intimate imagery shared without consent) or "youth" (content that appears to depict a minor);
    jurisdiction "KR" cites Korean law, anything else the host's own policies. Items that expose personal
    information add a request for its removal (Korea: Network Act art. 44-2; the GDPR's art. 17 in the EEA),
    naming the kinds found, never their values; a notice of such items alone claims no intimate imagery. Raises
    ValueError on an unknown language or kind, a malformed hash, a naive datetime, or a template error.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not items:
        raise ValueError("a notice needs at least one item")
    reference = _one_line(reference, 200)
    if not reference:
        raise ValueError("a notice needs a reference number")
    template = load_template(language, templates_dir)
    where = f"{language}.yaml"
    labels = template["labels"]

    def kind_names(kinds: list[str] | tuple[str, ...]) -> str:
        unknown = [k for k in kinds if k not in EXPOSED_KINDS]
        if unknown:
            raise ValueError(f"unknown kinds of personal information: {', '.join(unknown)}")
        ordered = sorted(set(kinds), key=EXPOSED_KINDS.index)
        return str(labels["list_separator"]).join(labels[f"exposed_{k}"] for k in ordered)

    prepared = []
    for number, item in enumerate(items, start=1):
        hashes = []
        kinds = sorted(item.hashes, key=lambda k: (_HASH_ORDER.index(k) if k in _HASH_ORDER else len(_HASH_ORDER), k))
        for hash_kind in kinds:
            value = item.hashes[hash_kind].strip().lower()
            if not _SHA256_RE.match(value):
                raise ValueError(f"item {number}: {hash_kind} hash is not a SHA-256 hex digest: {value!r}")
            label = labels.get(f"hash_{hash_kind}") or _render(labels["hash_other"], {"kind": hash_kind},
                                                               f"{where} labels.hash_other")
            hashes.append({"kind": hash_kind, "label": label, "value": value})
        posted = item.posted_at
        prepared.append({
            "number": number,
            "page_url": _one_line(item.page_url, None),  # never cut a URL
            "media_url": _one_line(item.media_url, None),
            "title": _one_line(item.title) or labels["untitled"],
            "posted": _format_time(_aware(posted, f"item {number} posted_at"), labels, where) if posted
            else labels["unknown"],
            "captured": _format_time(_aware(item.captured_at, f"item {number} captured_at"), labels, where),
            "hashes": hashes,
            "exposed": kind_names(item.exposed),
        })
    context: dict[str, Any] = {
        "kind": kind,
        "jurisdiction": jurisdiction.upper(),
        "site": site,
        "site_name": site.name or site.host,
        "policy_url": site.policy_url or "",
        "sender": sender,
        "reference": reference,
        "items": prepared,
        "count": len(prepared),
        "L": labels,
        # False when every item only exposes personal information: the notice must not claim intimate imagery
        "matched": kind == "youth" or any(item.reason != "personal_info" for item in items),
        "exposed": kind_names([k for item in items for k in item.exposed]),
    }
    legal_key = f"legal_{'kr' if context['jurisdiction'] == 'KR' else 'abroad'}_{kind}"
    legal = [_render(template[legal_key], context, f"{where} {legal_key}").strip()] if context["matched"] else []
    if context["exposed"]:
        privacy_key = ("privacy_kr" if context["jurisdiction"] == "KR" else
                       "privacy_eu" if context["jurisdiction"] in GDPR_JURISDICTIONS else "privacy_abroad")
        legal.append(_render(template[privacy_key], context, f"{where} {privacy_key}").strip())
    if not legal:
        raise ValueError("a notice of personal information needs at least one item that exposes some")
    context["legal"] = "\n\n".join(legal)
    subject = _one_line(_render(template["subject"], context, f"{where} subject"), 900)
    body = _render(template["body"], context, f"{where} body").strip() + "\n"
    return subject, body
