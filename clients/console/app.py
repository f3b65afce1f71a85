"""The officers' web console: the review queue, decisions, notices, removals and cases, in Korean or English.

A Flask application served by waitress (`jiwoom console`). Officers log in with their name and their officer API
token (`jiwoom token --role officer`); the console keeps the token server-side and asks the Matcher with it, so the
service's audit log names the officer for every index change (reject → MarkBenign, reference uploads, forgetting a
case). Decisions, reveals, logins and notice actions are audited here.

Media are never shown plainly by default: thumbnails and screenshots are served grey and blurred, and the original
is sent only when an officer reveals one item (audited). Every page is self-contained (no outside resource), behind
a strict Content-Security-Policy, with CSRF tokens on every form and nothing cached by the browser.
"""

from __future__ import annotations

import contextlib
import hmac
import io
import logging
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import grpc
import yaml
from flask import (
    Flask,
    Request,
    Response,
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from markupsafe import Markup
from PIL import Image
from psycopg_pool import ConnectionPool
from waitress.server import create_server

from clients import KST
from clients.console import review, views
from clients.evidence.reports import clock, obscure, screenshot_view
from clients.evidence.vault import Vault
from clients.evidence.writer import enqueue_items, read_artefact
from clients.matcher import MatcherClient
from clients.monitor import removal_chart_svg, removal_csv, removal_report
from clients.notices import LANGUAGES as NOTICE_LANGUAGES
from clients.notices.drafts import (
    Drafting,
    NoticeError,
    approve,
    cancel,
    edit,
    list_notices,
    notice_items,
    notice_texts,
    resolve_sending,
    withdrawal_blocked_by,
)
from server.calibration import odds
from server.config import Settings
from server.store import Principal, Store

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
UI_LANGUAGES = ("ko", "en")
SESSION_COOKIE = "jiwoom_session"
LANGUAGE_COOKIE = "jiwoom_lang"
LOGIN_FAILURES_ALLOWED = 5  # per address, in LOGIN_FAILURE_WINDOW_S: then that address waits
LOGIN_FAILURE_WINDOW_S = 300.0
THUMBNAIL_CACHE = 128
MAX_FORM_TEXT = 100_000  # a notice body is a few KB
CONTENT_SECURITY_POLICY = ("default-src 'none'; img-src 'self' data:; style-src 'self'; script-src 'self';"
                           " form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


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
    client: MatcherClient
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

    def thumbnail(self, item_id: int, at_s: float) -> Image.Image | None:
        """Decrypting and decoding costs up to a second for a video: recent thumbnails are kept in memory
        (small, never on disk), and served only while their item exists (a forgotten case's go at once)."""
        key = (item_id, round(at_s, 1))
        with self.pool.connection() as conn:
            if conn.execute("select 1 from evidence_items where id = %s", (item_id,)).fetchone() is None:
                self.forget_thumbnails({item_id})
                return None
            with self.lock:
                if key in self.thumbnails:
                    self.thumbnails.move_to_end(key)
                    return self.thumbnails[key]
            picture = views.media_thumbnail(conn, self.vault, item_id, at_s, self.settings.limits)
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


def _png(picture: Image.Image | bytes) -> Response:
    """A picture (or PNG bytes) as an uncached PNG response."""
    if isinstance(picture, Image.Image):
        out = io.BytesIO()
        picture.save(out, "PNG")
        picture = out.getvalue()
    return send_file(io.BytesIO(picture), mimetype="image/png", max_age=0)


# -- the application -----------------------------------------------------------------------------------------------


def create_app(console: Console) -> Flask:
    app = Flask(__name__, template_folder=str(HERE / "templates"), static_folder=str(HERE / "static"))
    app.request_class = InMemoryUploads
    app.config.update(MAX_CONTENT_LENGTH=console.settings.console.max_upload_bytes, MAX_FORM_MEMORY_SIZE=MAX_FORM_TEXT,
                      SECRET_KEY=secrets.token_bytes(32))  # only for flash messages; sessions are server-side
    messages = load_messages()
    store = Store(console.pool)
    idle_s = console.settings.console.session_idle_s
    public_endpoints = {"login", "static", "language"}

    def t(key: str, **values: Any) -> str:
        text = messages[g.get("lang", "ko")].get(key, key)
        return text.format(**values) if values else text

    app.jinja_env.globals.update(t=t, kst=kst, clock=clock, hours_between=hours_between, confidence=odds,
                                 NOTICE_LANGUAGES=NOTICE_LANGUAGES, UI_LANGUAGES=UI_LANGUAGES)

    # -- sessions, CSRF, headers ---------------------------------------------------------------------------------

    @app.before_request
    def load_session() -> Response | None:
        lang = request.cookies.get(LANGUAGE_COOKIE, "ko")
        g.lang = lang if lang in UI_LANGUAGES else "ko"
        g.officer = None
        session_id = request.cookies.get(SESSION_COOKIE, "")
        now = time.monotonic()
        with console.lock:
            session = console.sessions.get(session_id)
            if session is not None and now - session.last_seen > idle_s:
                del console.sessions[session_id]
                session = None
            if session is not None:
                session.last_seen = now
        g.officer = session
        if session is None and request.endpoint not in public_endpoints:
            if request.method == "GET" and request.endpoint is not None:
                return redirect(url_for("login", next=request.full_path))
            abort(401)
        if request.method == "POST" and session is not None:
            sent = request.form.get("csrf", "")
            if not hmac.compare_digest(sent, session.csrf):
                abort(400, description="the form is stale or forged (CSRF token mismatch): reload the page")
        return None

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Cache-Control"] = "no-store"  # evidence and media never sit in a browser cache
        return response

    @app.context_processor
    def officer_context() -> dict[str, Any]:
        session: OfficerSession | None = g.get("officer")
        return {"officer": session.who if session else None, "csrf": session.csrf if session else "",
                "lang": g.get("lang", "ko")}

    def officer() -> OfficerSession:
        session: OfficerSession | None = g.get("officer")
        if session is None:
            abort(401)
        return session

    def grpc_failure(error: grpc.RpcError) -> str:
        code = error.code().name if hasattr(error, "code") else "UNKNOWN"
        details = error.details() if hasattr(error, "details") else str(error)
        return t("service_error", code=code, details=details)

    @app.errorhandler(413)
    def too_large(_error: Exception) -> tuple[str, int]:
        limit = console.settings.console.max_upload_bytes // (1024 * 1024)
        return render_template("error.html", message=t("upload_too_large", mb=limit)), 413

    @app.errorhandler(400)
    @app.errorhandler(404)
    def client_error(error: Any) -> tuple[str, int]:
        return render_template("error.html", message=getattr(error, "description", str(error))), error.code

    # -- login ---------------------------------------------------------------------------------------------------

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        next_url = request.values.get("next", "")
        if not next_url.startswith("/") or next_url.startswith("//"):  # only our own pages
            next_url = url_for("queue")
        if request.method == "GET":
            return render_template("login.html", next=next_url)
        address = request.remote_addr or ""
        now = time.monotonic()
        with console.lock:
            recent = console.failures.setdefault(address, deque())
            while recent and now - recent[0] > LOGIN_FAILURE_WINDOW_S:
                recent.popleft()
            locked = len(recent) >= LOGIN_FAILURES_ALLOWED
        if locked:
            return render_template("login.html", next=next_url, error=t("login_locked")), 429
        name = request.form.get("name", "").strip()
        token = request.form.get("token", "").strip()
        who = store.principal(token) if token and len(token) < 200 else None
        if who is None or who.role not in ("officer", "admin") or who.name != name:
            with console.lock:
                recent.append(now)
            log.warning("console login refused for %r from %s", name[:80], address)
            return render_template("login.html", next=next_url, error=t("login_failed")), 403
        session = OfficerSession(secrets.token_urlsafe(32), who, MatcherClient(console.channel, token),
                                 secrets.token_urlsafe(32), now)
        with console.lock:
            console.sessions[session.id] = session
            console.failures.pop(address, None)
        store.audit(who, "ConsoleLogin", "", {"address": address})
        response = redirect(next_url)
        response.set_cookie(SESSION_COOKIE, session.id, httponly=True, samesite="Strict",
                            secure=console.settings.console.secure_cookies)
        return response

    @app.post("/logout")
    def logout() -> Any:
        session = officer()
        with console.lock:
            console.sessions.pop(session.id, None)
        store.audit(session.who, "ConsoleLogout")
        response = redirect(url_for("login"))
        response.delete_cookie(SESSION_COOKIE)
        return response

    @app.get("/language/<code>")
    def language(code: str) -> Any:
        next_url = request.args.get("next", "/")
        response = redirect(next_url if next_url.startswith("/") and not next_url.startswith("//") else "/")
        if code in UI_LANGUAGES:
            response.set_cookie(LANGUAGE_COOKIE, code, samesite="Strict", max_age=365 * 86400)
        return response

    # -- queue and items -----------------------------------------------------------------------------------------

    @app.get("/")
    def home() -> Any:
        return redirect(url_for("queue"))

    @app.get("/queue")
    def queue() -> Any:
        show = request.args.get("show", "open")
        if show not in views.QUEUE_STATES:
            show = "open"
        page = max(0, request.args.get("page", 0, type=int))
        order = request.args.get("order", "urgency")
        if order not in views.QUEUE_ORDERS:
            order = "urgency"
        with console.pool.connection() as conn:
            # Matches the worker has not picked up yet belong in the queue at once.
            enqueue_items(conn, console.vault)
            items, total = views.queue(conn, views.QUEUE_STATES[show], limit=50, offset=page * 50, order=order)
            counts = views.queue_counts(conn)
        return render_template("queue.html", items=items, total=total, show=show, page=page, counts=counts,
                               order=order, orders=list(views.QUEUE_ORDERS))

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> Any:
        with console.pool.connection() as conn:
            shown = views.item(conn, item_id)
            if shown is None:
                abort(404, description=t("no_item", id=item_id))
            artefacts = views.artefacts(conn, item_id)
            entry = views.log_entry(conn, item_id)
        return render_template("item.html", item=shown, artefacts=artefacts, entry=entry)

    def _revealed(item_id: int, what: str) -> bool:
        """A request for the original: allowed to any officer, one picture at a time, always audited."""
        if request.args.get("view") != "clear":
            return False
        store.audit(officer().who, "RevealItem", f"item:{item_id}", {"what": what})
        return True

    @app.get("/items/<int:item_id>/thumb")
    def thumbnail(item_id: int) -> Any:
        at_s = request.args.get("at", 0.0, type=float)
        picture = console.thumbnail(item_id, at_s)
        if picture is None:
            abort(404, description=t("no_picture"))
        if _revealed(item_id, "media"):
            return _png(picture)
        return _png(obscure(picture, radius=max(8, max(picture.size) // 18)))

    @app.get("/items/<int:item_id>/screenshot")
    def screenshot(item_id: int) -> Any:
        with console.pool.connection() as conn:
            png = read_artefact(conn, console.vault, item_id, "screenshot")
        if png is None:
            abort(404, description=t("no_picture"))
        return _png(screenshot_view(png, reveal=_revealed(item_id, "screenshot")).png)

    @app.post("/items/<int:item_id>/decide")
    def decide(item_id: int) -> Any:
        session = officer()
        decision = request.form.get("decision", "")
        note = request.form.get("note", "")
        back = request.form.get("back", "")
        back = back if back.startswith("/") and not back.startswith("//") else url_for("queue")
        try:
            with console.pool.connection() as conn:
                target = review.review_target(conn, item_id)
                blocked = withdrawal_blocked_by(conn, item_id) if decision == "reject" else None
            if blocked is not None:
                raise NoticeError(t("reject_blocked", id=item_id, notice=blocked))
            if decision == "reject" and target.case_id is not None and target.review_state != "rejected":
                # Not this victim: into this case's negative bank, so the same media never matches the case again.
                session.client.mark_benign(sighting_id=target.sighting_id, case_id=target.case_id,
                                           note=f"rejected in review (item {item_id})")
            with console.pool.connection() as conn:
                review.decide(conn, session.who, item_id, decision, console.drafting, note)
        except grpc.RpcError as error:
            flash(grpc_failure(error), "error")
        except (review.ReviewError, NoticeError) as error:
            flash(str(error), "error")
        else:
            flash(t(f"decided_{decision}", id=item_id), "ok")
        return redirect(back)

    # -- notices -------------------------------------------------------------------------------------------------

    @app.get("/notices")
    def notices() -> Any:
        state = request.args.get("state", "")
        with console.pool.connection() as conn:
            rows = list_notices(conn, state=state)
        return render_template("notices.html", notices=rows, state=state)

    @app.get("/notices/<int:notice_id>")
    def notice(notice_id: int) -> Any:
        with console.pool.connection() as conn:
            found = list_notices(conn, notice_id=notice_id)
            if not found:
                abort(404, description=t("no_notice", id=notice_id))
            texts = notice_texts(conn, notice_id)
            items = notice_items(conn, notice_id)
            item_ids = [r[0] for r in conn.execute(
                "select ni.item_id from notice_items ni where ni.notice_id = %s order by ni.item_id", (notice_id,))]
            reviews = dict(conn.execute("select id, review_state from evidence_items where id = any(%s)",
                                        (item_ids,)).fetchall())
        shown = request.args.get("language", found[0].language)
        if shown not in texts:
            shown = found[0].language
        return render_template("notice.html", notice=found[0], texts=texts, shown=shown,
                               items=list(zip(item_ids, items, strict=True)), reviews=reviews)

    def _notice_action(notice_id: int, action: Callable[[Any, Principal], None], done: str) -> Any:
        try:
            with console.pool.connection() as conn:
                action(conn, officer().who)
        except NoticeError as error:
            flash(str(error), "error")
        else:
            flash(t(done), "ok")
        return redirect(url_for("notice", notice_id=notice_id, language=request.form.get("language") or None))

    @app.post("/notices/<int:notice_id>/edit")
    def notice_edit(notice_id: int) -> Any:
        form = request.form
        language = form.get("language") or None
        recipient = form.get("recipient", "").strip() or None
        send_language = form.get("send_language") or None

        def change(conn: Any, who: Principal) -> None:
            current = list_notices(conn, notice_id=notice_id)
            edited_recipient = None if current and recipient == current[0].recipient else recipient
            texts = notice_texts(conn, notice_id)
            subject = form.get("subject")
            body = form.get("body")
            if language in texts and (subject, body) == texts[language][:2]:
                subject = body = None  # unchanged: keep the generated text (and its re-rendering)
            edit(conn, who, notice_id, language=language, subject=subject, body=body,
                 recipient=edited_recipient, send_language=send_language)

        return _notice_action(notice_id, change, "notice_saved")

    @app.post("/notices/<int:notice_id>/approve")
    def notice_approve(notice_id: int) -> Any:
        return _notice_action(notice_id, lambda conn, who: approve(conn, who, notice_id), "notice_approved")

    @app.post("/notices/<int:notice_id>/cancel")
    def notice_cancel(notice_id: int) -> Any:
        return _notice_action(notice_id, lambda conn, who: cancel(conn, who, notice_id), "notice_cancelled")

    @app.post("/notices/<int:notice_id>/resolve")
    def notice_resolve(notice_id: int) -> Any:
        delivered = request.form.get("delivered") == "yes"
        recheck = console.settings.monitor.recheck_interval_s
        return _notice_action(notice_id, lambda conn, who: resolve_sending(
            conn, who, notice_id, delivered=delivered, recheck_after_s=recheck), "notice_resolved")

    # -- removals ------------------------------------------------------------------------------------------------

    @app.get("/removals")
    def removals() -> Any:
        with console.pool.connection() as conn:
            report = removal_report(conn)
            items = views.notified_items(conn)
        chart = removal_chart_svg(report, title=t("chart_title"), labels={
            "none": t("chart_none"), "not_removed": t("chart_not_removed"), "hours": t("chart_hours"),
            "counts": t("chart_counts")})
        by_site: dict[str, list[views.ItemView]] = {}
        for shown in items:
            by_site.setdefault(shown.site, []).append(shown)
        return render_template("removals.html", report=report, chart=Markup(chart), by_site=by_site)

    @app.get("/removals.csv")
    def removals_csv() -> Any:
        with console.pool.connection() as conn:
            report = removal_report(conn)
        return Response(removal_csv(report), mimetype="text/csv",
                        headers={"Content-Disposition": "attachment; filename=removals.csv"})

    # -- cases ---------------------------------------------------------------------------------------------------

    @app.get("/cases")
    def cases() -> Any:
        with console.pool.connection() as conn:
            rows = views.cases(conn)
        return render_template("cases.html", cases=rows)

    @app.post("/cases")
    def case_open() -> Any:
        case_id = request.form.get("case_id", "").strip()
        if not case_id or len(case_id) > 200 or any(c.isspace() or not c.isprintable() for c in case_id):
            flash(t("bad_case_id"), "error")
            return redirect(url_for("cases"))
        try:
            officer().client.configure_case(case_id, None)
        except grpc.RpcError as error:
            flash(grpc_failure(error), "error")
            return redirect(url_for("cases"))
        flash(t("case_opened", case=case_id), "ok")
        return redirect(url_for("case", case_id=case_id))

    def _case_page(case_id: str, uploads: list[dict[str, Any]] | None = None, status: int = 200) -> Any:
        with console.pool.connection() as conn:
            found = views.cases(conn, case_id)
            if not found:
                abort(404, description=t("no_case", case=case_id))
            refs = views.references(conn, case_id)
            items, _ = views.queue(conn, views.QUEUE_STATES["all"], limit=200, case_id=case_id)
            hit_ids = [m["sighting_id"] for u in uploads or [] for m in u.get("hits", []) if m.get("sighting_id")]
            hit_sightings = views.sightings(conn, hit_ids) if hit_ids else {}
        return render_template("case.html", case=found[0], references=refs, items=items, uploads=uploads or [],
                               hit_sightings=hit_sightings), status

    @app.get("/cases/<case_id>")
    def case(case_id: str) -> Any:
        return _case_page(case_id)

    @app.post("/cases/<case_id>/references")
    def case_upload(case_id: str) -> Any:
        session = officer()
        uploads: list[dict[str, Any]] = []
        files = [f for f in request.files.getlist("media") if f.filename]
        hashes = [h.strip() for h in request.form.get("pdq", "").split() if h.strip()]
        if not files and not hashes:
            flash(t("nothing_uploaded"), "error")
        for upload in files:
            data = upload.read()
            uploads.append(_register(session, case_id, upload.filename or "", media=data))
        if hashes:
            uploads.append(_register(session, case_id, t("pdq_hashes"), pdq=hashes))
        return _case_page(case_id, uploads)

    def _register(session: OfficerSession, case_id: str, name: str, *, media: bytes | None = None,
                  pdq: list[str] | None = None) -> dict[str, Any]:
        try:
            response = session.client.register_reference(case_id, media=media, pdq_hashes=pdq)
        except grpc.RpcError as error:
            return {"name": name, "error": grpc_failure(error)}
        hits = [{"signal": m.signal, "score": m.score, "threshold": m.threshold,
                 "sighting_id": m.sighting_id or None, "reference_id": m.reference_id, "case_id": m.case_id}
                for m in response.matches]
        return {"name": name, "reference_id": response.reference_id, "created": response.created,
                "kind": response.media.kind, "hits": hits}

    @app.post("/cases/<case_id>/forget")
    def case_forget(case_id: str) -> Any:
        if request.form.get("confirm_case_id", "") != case_id:
            flash(t("forget_confirm_mismatch"), "error")
            return redirect(url_for("case", case_id=case_id))
        try:
            with console.pool.connection() as conn:
                item_ids = {r[0] for r in conn.execute("select id from evidence_items where case_id = %s",
                                                       (case_id,))}
            result = officer().client.forget_case(case_id, request.form.get("reason", "")[:500])
        except grpc.RpcError as error:
            flash(grpc_failure(error), "error")
            return redirect(url_for("case", case_id=case_id))
        console.forget_thumbnails(item_ids)
        flash(t("case_forgotten", case=case_id, references=result.references_forgotten), "ok")
        return redirect(url_for("cases"))

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

