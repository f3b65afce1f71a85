"""The officers' web console: the review queue, decisions, notices, removals and cases, in Korean or English.

A Flask application served by waitress (`jiwoom console`). Officers log in with their name and their officer API
token (`jiwoom token --role officer`); the console keeps the token server-side and asks the Matcher with it, so the
service's audit log names the officer for every index change (reject → MarkBenign, reference uploads, forgetting a
case). Decisions, reveals, logins and notice actions are audited here.

Media are never shown plainly by default: thumbnails and screenshots are served grey and blurred, and the original
is sent only when an officer reveals one item (audited). Every page is self-contained (no outside resource), behind
a strict Content-Security-Policy, with CSRF tokens on every form and nothing cached by the browser.

This module is the app factory: `create_app` makes the Flask app, puts the `Console` (settings, pool, the service's
store, the vault, the Matcher channel: `clients.console.context`) in app.extensions, adds the headers and error pages
every response shares, and registers one blueprint per area: sessions (`session`), the review queue
(`review_queue`), an item with its pictures and the decisions on it (`items`), notices (`notices`), removals
(`removals`), cases (`cases`) and reference uploads to a case (`uploads`). Their queries are
`clients.console.store`'s; none runs SQL itself.
"""

from __future__ import annotations

import contextlib
import io
import secrets
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import IO, Any

from flask import Flask, Request, Response, current_app, render_template, url_for
from waitress.server import create_server

from clients.console import cases, crawls, items, notices, removals, review_queue, session, uploads
from clients.console.context import EXTENSION, HERE, UI_LANGUAGES, Console, current_console, t
from clients.evidence.reports import clock
from clients.notices.template_files import LANGUAGES as NOTICE_LANGUAGES
from jiwoom.shared.times import KST
from server.calibration import odds

__all__ = ["Console", "create_app", "serving"]

MAX_FORM_TEXT = 100_000  # a notice body is a few KB
CONTENT_SECURITY_POLICY = ("default-src 'none'; img-src 'self' data:; style-src 'self'; script-src 'self';"
                           " form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
# The navigation (base.html) marks the entry whose endpoint ('queue', 'notices', 'removals', 'cases', less a final
# s) the request's endpoint starts with: each of those areas' blueprints is named so that its endpoints do.
BLUEPRINTS = (session.blueprint, review_queue.blueprint, items.blueprint, notices.blueprint, removals.blueprint,
              cases.blueprint, uploads.blueprint, crawls.blueprint)


class InMemoryUploads(Request):
    """Uploaded files stay in memory (bounded by MAX_CONTENT_LENGTH): a victim's reference media must never be
    spooled to a temporary file on disk, where deleting it leaves the bytes behind."""

    def _get_file_stream(self, total_content_length: int | None, content_type: str | None,
                         filename: str | None = None, content_length: int | None = None) -> IO[bytes]:
        return io.BytesIO()


# -- formatting ----------------------------------------------------------------------------------------------------


def kst(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(KST).strftime("%Y-%m-%d %H:%M KST")


def hours_between(start: datetime | None, end: datetime | None) -> str:
    return "" if start is None or end is None else f"{(end - start).total_seconds() / 3600:.1f}"


# -- the application -----------------------------------------------------------------------------------------------

PAGES = "jiwoom.console.pages"  # app.extensions: each view's name → its endpoint


def page_url(endpoint: str, **values: Any) -> str:
    """`url_for` for the templates, which name pages by their view's name ('queue', 'notice', 'case_upload'): with
    blueprints the endpoints are '<blueprint>.<view>' (view names are unique across the console's blueprints)."""
    return url_for(current_app.extensions[PAGES].get(endpoint, endpoint), **values)


def security_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cache-Control"] = "no-store"  # evidence and media never sit in a browser cache
    return response


def too_large(_error: Exception) -> tuple[str, int]:
    limit = current_console().settings.console.max_upload_bytes // (1024 * 1024)
    return render_template("error.html", message=t("upload_too_large", mb=limit)), 413


def client_error(error: Any) -> tuple[str, int]:
    return render_template("error.html", message=getattr(error, "description", str(error))), error.code


def create_app(console: Console) -> Flask:
    """The console's Flask app, running on `console` (serve it with `serving`)."""
    app = Flask(__name__, template_folder=str(HERE / "templates"), static_folder=str(HERE / "static"))
    app.request_class = InMemoryUploads
    app.config.update(MAX_CONTENT_LENGTH=console.settings.console.max_upload_bytes, MAX_FORM_MEMORY_SIZE=MAX_FORM_TEXT,
                      SECRET_KEY=secrets.token_bytes(32))  # only for flash messages; sessions are server-side
    app.extensions[EXTENSION] = console
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    pages: dict[str, str] = {}
    for rule in app.url_map.iter_rules():
        name = rule.endpoint.rpartition(".")[2]
        if pages.setdefault(name, rule.endpoint) != rule.endpoint:
            raise RuntimeError(f"two console pages are called {name!r}: {pages[name]} and {rule.endpoint}")
    app.extensions[PAGES] = pages
    app.jinja_env.globals.update(url_for=page_url, t=t, kst=kst, clock=clock, hours_between=hours_between,
                                 confidence=odds, NOTICE_LANGUAGES=NOTICE_LANGUAGES, UI_LANGUAGES=UI_LANGUAGES)
    app.after_request(security_headers)
    app.register_error_handler(413, too_large)
    app.register_error_handler(400, client_error)
    app.register_error_handler(404, client_error)
    return app


# -- serving -------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def serving(app: Flask, listen: str, threads: int) -> Iterator[int]:
    """Serve `app` with waitress in a background thread for the duration of the block; yields the port."""
    host, _, port = listen.rpartition(":")
    server = create_server(app, host=host.strip("[]") or "127.0.0.1", port=int(port), threads=threads,
                           ident="jiwoom-console", clear_untrusted_proxy_headers=True)
    thread = threading.Thread(target=server.run, name="jiwoom-console", daemon=True)
    thread.start()
    try:
        yield int(server.effective_port)  # type: ignore[union-attr]
    finally:
        server.close()
        thread.join(timeout=10)

