"""The notice template files: where they live (`templates/<language>.yaml`), which languages have one, and
loading and checking one."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "LANGUAGES",
    "TEMPLATES_DIR",
    "available_languages",
    "load_template",
]

LANGUAGES = ("ko", "en", "zh", "ja", "ru", "vi", "es")
TEMPLATES_DIR = Path(__file__).parent / "templates"
_LANG_CODE_RE = re.compile(r"^[a-z]{2,3}(?:-[A-Za-z0-9]{1,8})*$")
_TEMPLATE_KEYS = ("subject", "body", "legal_kr_ncii", "legal_kr_youth", "legal_abroad_ncii", "legal_abroad_youth",
                  "privacy_kr", "privacy_eu", "privacy_abroad", "labels")
_LABEL_KEYS = ("page_url", "media_url", "title", "posted", "captured", "hashes", "hash_screenshot", "hash_warc",
               "hash_media", "hash_other", "untitled", "unknown", "datetime_format", "exposed", "list_separator",
               "exposed_name", "exposed_phone", "exposed_handle", "exposed_email", "exposed_place", "exposed_rrn",
               "exposed_messenger")


def available_languages(templates_dir: Path | None = None) -> list[str]:
    """Language codes that have a notice template file (templates/<code>.yaml)."""
    directory = templates_dir or TEMPLATES_DIR
    return sorted(p.stem for p in directory.glob("*.yaml") if _LANG_CODE_RE.match(p.stem))


def load_template(language: str, templates_dir: Path | None) -> dict[str, Any]:
    directory = templates_dir or TEMPLATES_DIR
    path = directory / f"{language}.yaml"
    if not _LANG_CODE_RE.match(language) or not path.is_file():
        raise ValueError(f"no notice template for language {language!r} in {directory}; "
                         f"available: {', '.join(available_languages(directory)) or 'none'}")
    with path.open(encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a mapping with keys {', '.join(_TEMPLATE_KEYS)}")
    missing = [k for k in _TEMPLATE_KEYS if k not in data]
    labels = data.get("labels")
    if not isinstance(labels, Mapping):
        missing.append("labels (a mapping)")
    else:
        missing += [f"labels.{k}" for k in _LABEL_KEYS if k not in labels]
    if missing:
        raise ValueError(f"{path}: missing {', '.join(missing)}")
    month_names = labels.get("month_names")
    if month_names is not None and (not isinstance(month_names, list) or len(month_names) != 12):
        raise ValueError(f"{path}: labels.month_names must list 12 month names")
    return dict(data)
