"""Cases: the list, opening one, its page (references, items), and forgetting it. Opening and forgetting go through
the Matcher with the officer's own token, so the service's audit log names the officer."""

from __future__ import annotations

from typing import Any

import grpc
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from clients.console.context import current_console, grpc_failure, officer, t
from clients.console.store import QUEUE_STATES, case_item_ids, case_references, case_summaries, queue_page, sightings
from server.matching.identifiers import KINDS as IDENTIFIER_KINDS

blueprint = Blueprint("cases", __name__)
CASE_ITEMS_SHOWN = 200


@blueprint.get("/cases")
def cases() -> Any:
    with current_console().pool.connection() as conn:
        rows = case_summaries(conn)
    return render_template("cases.html", cases=rows)


@blueprint.post("/cases")
def case_open() -> Any:
    case_id = request.form.get("case_id", "").strip()
    if not case_id or len(case_id) > 200 or any(c.isspace() or not c.isprintable() for c in case_id):
        flash(t("bad_case_id"), "error")
        return redirect(url_for("cases.cases"))
    try:
        officer().client.configure_case(case_id, None)
    except grpc.RpcError as error:
        flash(grpc_failure(error), "error")
        return redirect(url_for("cases.cases"))
    flash(t("case_opened", case=case_id), "ok")
    return redirect(url_for("cases.case", case_id=case_id))


def case_page(case_id: str, uploads: list[dict[str, Any]] | None = None, status: int = 200) -> Any:
    """A case's page; after an upload, with what each upload registered and matched (`clients.console.uploads`)."""
    with current_console().pool.connection() as conn:
        found = case_summaries(conn, case_id)
        if not found:
            abort(404, description=t("no_case", case=case_id))
        refs = case_references(conn, case_id)
        items, _ = queue_page(conn, QUEUE_STATES["all"], limit=CASE_ITEMS_SHOWN, case_id=case_id)
        hit_ids = [m["sighting_id"] for u in uploads or [] for m in u.get("hits", []) if m.get("sighting_id")]
        hit_sightings = sightings(conn, hit_ids) if hit_ids else {}
    return render_template("case.html", case=found[0], references=refs, items=items, uploads=uploads or [],
                           hit_sightings=hit_sightings, identifier_kinds=IDENTIFIER_KINDS), status


@blueprint.get("/cases/<case_id>")
def case(case_id: str) -> Any:
    return case_page(case_id)


@blueprint.post("/cases/<case_id>/identifiers")
def case_identifiers(case_id: str) -> Any:
    """A victim's identifier for the Matcher to look for in crawled posts. The value goes to the service and
    nowhere else: never flashed, logged or put back in the form; the service stores only its digest."""
    kind = request.form.get("kind", "")
    value = request.form.get("value", "").strip()
    back = redirect(url_for("cases.case", case_id=case_id))
    if kind not in IDENTIFIER_KINDS or not value or len(value) > 200:
        flash(t("identifier_invalid"), "error")
        return back
    try:
        added = officer().client.record_identifiers(case_id, [(kind, value)])
    except grpc.RpcError as error:
        # Not grpc_failure: the service's details might quote what was sent, and the page never shows values.
        code = error.code().name if hasattr(error, "code") else "UNKNOWN"
        flash(t("identifier_failed", code=code), "error")
        return back
    flash(t("identifier_recorded" if added else "identifier_known", kind=t(f"exposed_{kind}")), "ok")
    return back


@blueprint.post("/cases/<case_id>/forget")
def case_forget(case_id: str) -> Any:
    console = current_console()
    if request.form.get("confirm_case_id", "") != case_id:
        flash(t("forget_confirm_mismatch"), "error")
        return redirect(url_for("cases.case", case_id=case_id))
    try:
        with console.pool.connection() as conn:
            item_ids = case_item_ids(conn, case_id)
        result = officer().client.forget_case(case_id, request.form.get("reason", "")[:500])
    except grpc.RpcError as error:
        flash(grpc_failure(error), "error")
        return redirect(url_for("cases.case", case_id=case_id))
    console.forget_thumbnails(item_ids)
    flash(t("case_forgotten", case=case_id, references=result.references_forgotten), "ok")
    return redirect(url_for("cases.cases"))
