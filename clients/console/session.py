"""Officers' sessions: logging in and out, the page language, and the guard every request passes (session, idle
timeout, CSRF).

Officers log in with their name and their officer API token (`jiwoom token --role officer`); the console keeps the
token server-side, in the officer's Matcher client, and the browser holds only a random session id. Logins are
audited; repeated failures from one address make it wait.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections import deque
from typing import Any

from flask import Blueprint, Response, abort, g, redirect, render_template, request, url_for

from clients.console.context import UI_LANGUAGES, OfficerSession, current_console, officer, own_page, t

log = logging.getLogger(__name__)
SESSION_COOKIE = "jiwoom_session"
LANGUAGE_COOKIE = "jiwoom_lang"
LOGIN_FAILURES_ALLOWED = 5  # per address, in LOGIN_FAILURE_WINDOW_S: then that address waits
LOGIN_FAILURE_WINDOW_S = 300.0

blueprint = Blueprint("session", __name__)
PUBLIC_ENDPOINTS = {"session.login", "session.language", "static"}  # the only pages served without a session


@blueprint.before_app_request
def load_session() -> Response | None:
    """Every request: its language, its officer (if the session is live), and the CSRF check of every form."""
    console = current_console()
    lang = request.cookies.get(LANGUAGE_COOKIE, "ko")
    g.lang = lang if lang in UI_LANGUAGES else "ko"
    g.officer = None
    session_id = request.cookies.get(SESSION_COOKIE, "")
    now = time.monotonic()
    with console.lock:
        session = console.sessions.get(session_id)
        if session is not None and now - session.last_seen > console.settings.console.session_idle_s:
            del console.sessions[session_id]
            session = None
        if session is not None:
            session.last_seen = now
    g.officer = session
    if session is None and request.endpoint not in PUBLIC_ENDPOINTS:
        if request.method == "GET" and request.endpoint is not None:
            return redirect(url_for("session.login", next=request.full_path))
        abort(401)
    if request.method == "POST" and session is not None:
        sent = request.form.get("csrf", "")
        if not hmac.compare_digest(sent, session.csrf):
            abort(400, description="the form is stale or forged (CSRF token mismatch): reload the page")
    return None


@blueprint.app_context_processor
def officer_context() -> dict[str, Any]:
    session: OfficerSession | None = g.get("officer")
    return {"officer": session.who if session else None, "csrf": session.csrf if session else "",
            "lang": g.get("lang", "ko")}


@blueprint.route("/login", methods=["GET", "POST"])
def login() -> Any:
    console = current_console()
    next_url = request.values.get("next", "")
    if not own_page(next_url):  # only our own pages
        next_url = url_for("queue.queue")
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
    who = console.store.principal(token) if token and len(token) < 200 else None
    if who is None or who.role not in ("officer", "admin") or who.name != name:
        with console.lock:
            recent.append(now)
        log.warning("console login refused for %r from %s", name[:80], address)
        return render_template("login.html", next=next_url, error=t("login_failed")), 403
    session = OfficerSession(secrets.token_urlsafe(32), who, console.matcher(token), secrets.token_urlsafe(32), now)
    with console.lock:
        console.sessions[session.id] = session
        console.failures.pop(address, None)
    console.store.audit(who, "ConsoleLogin", "", {"address": address})
    response = redirect(next_url)
    response.set_cookie(SESSION_COOKIE, session.id, httponly=True, samesite="Strict",
                        secure=console.settings.console.secure_cookies)
    return response


@blueprint.post("/logout")
def logout() -> Any:
    console = current_console()
    session = officer()
    with console.lock:
        console.sessions.pop(session.id, None)
    console.store.audit(session.who, "ConsoleLogout")
    response = redirect(url_for("session.login"))
    response.delete_cookie(SESSION_COOKIE)
    return response


@blueprint.get("/language/<code>")
def language(code: str) -> Any:
    next_url = request.args.get("next", "/")
    response = redirect(next_url if own_page(next_url) else "/")
    if code in UI_LANGUAGES:
        response.set_cookie(LANGUAGE_COOKIE, code, samesite="Strict", max_age=365 * 86400)
    return response
