"""One evidence item: its page (matches, stored artefacts and their hashes, its evidence-log entry), its pictures,
and officers' decisions on it (confirm, reject as not the victim, escalate; the decision itself is
`clients.console.review`'s).

Media are never shown plainly by default: thumbnails and screenshots are served grey and blurred, and the original
is sent only when an officer reveals one item (audited).
"""

from __future__ import annotations

from typing import Any

import grpc
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from clients.console import review
from clients.console.context import current_console, grpc_failure, officer, own_page, t
from clients.console.pictures import png_response
from clients.console.store import item_detail, item_log_entry
from clients.evidence.reports import obscure, screenshot_view
from clients.evidence.store import artefact_hashes
from clients.evidence.writer import read_artefact
from clients.notices.drafts import NoticeError, withdrawal_blocked_by

blueprint = Blueprint("items", __name__)


@blueprint.get("/items/<int:item_id>")
def item(item_id: int) -> Any:
    with current_console().pool.connection() as conn:
        shown = item_detail(conn, item_id)
        if shown is None:
            abort(404, description=t("no_item", id=item_id))
        artefacts = artefact_hashes(conn, item_id)
        entry = item_log_entry(conn, item_id)
    return render_template("item.html", item=shown, artefacts=artefacts, entry=entry)


def _revealed(item_id: int, what: str) -> bool:
    """A request for the original: allowed to any officer, one picture at a time, always audited."""
    if request.args.get("view") != "clear":
        return False
    current_console().store.audit(officer().who, "RevealItem", f"item:{item_id}", {"what": what})
    return True


@blueprint.get("/items/<int:item_id>/thumb")
def thumbnail(item_id: int) -> Any:
    at_s = request.args.get("at", 0.0, type=float)
    picture = current_console().thumbnail(item_id, at_s)
    if picture is None:
        abort(404, description=t("no_picture"))
    if _revealed(item_id, "media"):
        return png_response(picture)
    return png_response(obscure(picture, radius=max(8, max(picture.size) // 18)))


@blueprint.get("/items/<int:item_id>/screenshot")
def screenshot(item_id: int) -> Any:
    console = current_console()
    with console.pool.connection() as conn:
        png = read_artefact(conn, console.vault, item_id, "screenshot")
    if png is None:
        abort(404, description=t("no_picture"))
    return png_response(screenshot_view(png, reveal=_revealed(item_id, "screenshot")).png)


@blueprint.post("/items/<int:item_id>/decide")
def decide(item_id: int) -> Any:
    console = current_console()
    session = officer()
    decision = request.form.get("decision", "")
    note = request.form.get("note", "")
    back = request.form.get("back", "")
    back = back if own_page(back) else url_for("queue.queue")
    try:
        with console.pool.connection() as conn:
            target = review.review_target(conn, item_id)
            blocked = withdrawal_blocked_by(conn, item_id) if decision == "reject" else None
        if blocked is not None:
            raise NoticeError(t("reject_blocked", id=item_id, notice=blocked))
        if decision == "reject" and target.case_id is not None and target.review_state != "rejected" \
                and target.reason == "match":
            # Not this victim: into this case's negative bank, so the same media never matches the case again. A
            # personal-information item rejected says nothing about the media, so it stays out of that bank.
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
