"""What every page of the console shares: the `Console` it runs on (settings, database pool, the service's token and
audit store, the evidence vault, the Matcher channel, the logged-in officers), and the few helpers the blueprints
all use to reach it.

The app factory (`clients.console.app.create_app`) puts the one `Console` in `app.extensions[EXTENSION]`; a
blueprint reaches it, during a request, through `current_console()`, and the logged-in officer (with the Matcher
client that asks with the officer's own token) through `officer()`. Nothing is captured in closures, so each
blueprint module can be read, and registered, on its own.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml
from flask import abort, current_app, g
from PIL import Image
from psycopg_pool import ConnectionPool

from clients.console.pictures import media_thumbnail
from clients.console.store import item_exists
from clients.evidence.vault import Vault
from clients.notices.drafts import Drafting
from jiwoom.api.client import MatcherClient
from server.config import Settings
from server.storage.store import Principal, Store

HERE = Path(__file__).parent
EXTENSION = "jiwoom.console"  # the key of the app's `Console` in app.extensions
UI_LANGUAGES = ("ko", "en")
THUMBNAIL_CACHE = 128


def load_messages() -> dict[str, dict[str, str]]:
    """The console's words per language (messages/<lang>.yaml); a missing word falls back to English."""
    messages = {lang: yaml.safe_load((HERE / "messages" / f"{lang}.yaml").read_text(encoding="utf-8"))
                for lang in UI_LANGUAGES}
    for lang in UI_LANGUAGES:
        messages[lang] = {**messages["en"], **messages[lang]}
    return messages


@dataclass
class OfficerSession:
    id: str
    who: Principal
    client: MatcherClient  # asks the Matcher with this officer's own token: the service's audit log names them
    csrf: str
    last_seen: float


@dataclass
class Console:
    """What the console runs on: the database, the evidence vault, the Matcher, and the logged-in officers."""

    settings: Settings
    pool: ConnectionPool
    vault: Vault
    drafting: Drafting
    channel: grpc.Channel
    sessions: dict[str, OfficerSession] = field(default_factory=dict)
    failures: dict[str, deque[float]] = field(default_factory=dict)
    thumbnails: OrderedDict[tuple[int, float], Image.Image | None] = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    store: Store = field(init=False)  # the service's tokens (log-in) and audit log, on the same pool
    messages: dict[str, dict[str, str]] = field(init=False, default_factory=load_messages)

    def __post_init__(self) -> None:
        self.store = Store(self.pool)

    def matcher(self, token: str) -> MatcherClient:
        """A Matcher client on the console's channel that asks with this (officer's) token."""
        return MatcherClient(self.channel, token)

    def thumbnail(self, item_id: int, at_s: float) -> Image.Image | None:
        """Decrypting and decoding costs up to a second for a video: recent thumbnails are kept in memory
        (small, never on disk), and served only while their item exists (a forgotten case's go at once)."""
        key = (item_id, round(at_s, 1))
        with self.pool.connection() as conn:
            if not item_exists(conn, item_id):
                self.forget_thumbnails({item_id})
                return None
            with self.lock:
                if key in self.thumbnails:
                    self.thumbnails.move_to_end(key)
                    return self.thumbnails[key]
            picture = media_thumbnail(conn, self.vault, item_id, at_s, self.settings.limits)
        if picture is not None:
            with self.lock:
                self.thumbnails[key] = picture
                while len(self.thumbnails) > THUMBNAIL_CACHE:
                    self.thumbnails.popitem(last=False)
        return picture

    def forget_thumbnails(self, item_ids: set[int]) -> None:
        with self.lock:
            for key in [k for k in self.thumbnails if k[0] in item_ids]:
                del self.thumbnails[key]


# -- for the blueprints, during a request ----------------------------------------------------------------------------


def current_console() -> Console:
    """The `Console` of the app handling this request."""
    console: Console = current_app.extensions[EXTENSION]
    return console


def officer() -> OfficerSession:
    """The logged-in officer's session; 401 without one (the session guard lets only the log-in pages through)."""
    session: OfficerSession | None = g.get("officer")
    if session is None:
        abort(401)
    return session


def t(key: str, **values: Any) -> str:
    """The console's word for `key` in the request's language (formatted with `values`); the key if it has none."""
    text = current_console().messages[g.get("lang", "ko")].get(key, key)
    return text.format(**values) if values else text


def grpc_failure(error: grpc.RpcError) -> str:
    """What to tell the officer when the Matcher refused or failed."""
    code = error.code().name if hasattr(error, "code") else "UNKNOWN"
    details = error.details() if hasattr(error, "details") else str(error)
    return t("service_error", code=code, details=details)


def own_page(path: str) -> bool:
    """Whether a redirect target is a page of ours: a path, never another site ("//evil.example/")."""
    return path.startswith("/") and not path.startswith("//")
