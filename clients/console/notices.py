"""Takedown notices: the list, one notice in each of its languages, and officers' actions on it (edit, approve,
cancel, resolve one stuck in sending). The notices themselves are `clients.notices.drafts`'s; every action is
audited there."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from clients.console.context import current_console, officer, t
from clients.console.store import review_states
from clients.notices.drafts import (
    NoticeError,
    approve,
    cancel,
    edit,
    list_notices,
    notice_items,
    notice_texts,
    resolve_sending,
)
from clients.notices.store import notice_item_ids
from server.storage.store import Principal

blueprint = Blueprint("notices", __name__)


@blueprint.get("/notices")
def notices() -> Any:
    state = request.args.get("state", "")
    with current_console().pool.connection() as conn:
        rows = list_notices(conn, state=state)
    return render_template("notices.html", notices=rows, state=state)


@blueprint.get("/notices/<int:notice_id>")
def notice(notice_id: int) -> Any:
    with current_console().pool.connection() as conn:
        found = list_notices(conn, notice_id=notice_id)
        if not found:
            abort(404, description=t("no_notice", id=notice_id))
        texts = notice_texts(conn, notice_id)
        items = notice_items(conn, notice_id)
        item_ids = notice_item_ids(conn, notice_id)
        reviews = review_states(conn, item_ids)
    shown = request.args.get("language", found[0].language)
    if shown not in texts:
        shown = found[0].language
    return render_template("notice.html", notice=found[0], texts=texts, shown=shown,
                           items=list(zip(item_ids, items, strict=True)), reviews=reviews)


def _notice_action(notice_id: int, action: Callable[[Any, Principal], None], done: str) -> Any:
    """Run one action on a notice in one transaction, tell the officer how it went, and show the notice again."""
    try:
        with current_console().pool.connection() as conn:
            action(conn, officer().who)
    except NoticeError as error:
        flash(str(error), "error")
    else:
        flash(t(done), "ok")
    return redirect(url_for("notices.notice", notice_id=notice_id, language=request.form.get("language") or None))


@blueprint.post("/notices/<int:notice_id>/edit")
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


@blueprint.post("/notices/<int:notice_id>/approve")
def notice_approve(notice_id: int) -> Any:
    return _notice_action(notice_id, lambda conn, who: approve(conn, who, notice_id), "notice_approved")


@blueprint.post("/notices/<int:notice_id>/cancel")
def notice_cancel(notice_id: int) -> Any:
    return _notice_action(notice_id, lambda conn, who: cancel(conn, who, notice_id), "notice_cancelled")


@blueprint.post("/notices/<int:notice_id>/resolve")
def notice_resolve(notice_id: int) -> Any:
    delivered = request.form.get("delivered") == "yes"
    recheck = current_console().settings.monitor.recheck_interval_s
    return _notice_action(notice_id, lambda conn, who: resolve_sending(
        conn, who, notice_id, delivered=delivered, recheck_after_s=recheck), "notice_resolved")
