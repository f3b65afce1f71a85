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


@dataclass(frozen=True)
class NoticeItem:
    """One piece of content to take down, with the evidence captured for it. Datetimes must be timezone-aware."""

    page_url: str
    media_url: str
    title: str
    posted_at: datetime | None
    captured_at: datetime
    hashes: dict[str, str]  # artefact kind ("screenshot", "warc", "media") -> sha256 hex



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
    jurisdiction "KR" cites Korean law, anything else the host's own policies. Raises ValueError on an unknown
    language or kind, a malformed hash, a naive datetime, or a template error.
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
    }
    legal_key = f"legal_{'kr' if context['jurisdiction'] == 'KR' else 'abroad'}_{kind}"
    context["legal"] = _render(template[legal_key], context, f"{where} {legal_key}").strip()
    subject = _one_line(_render(template["subject"], context, f"{where} subject"), 900)
    body = _render(template["body"], context, f"{where} body").strip() + "\n"
    return subject, body
