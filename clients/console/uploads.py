"""Reference uploads to a case: a victim's media (or PDQ hashes) registered with the Matcher under the officer's own
token; the retro-hunt's hits on everything crawled so far are shown at once, on the case's page.

The uploaded bytes stay in memory (`clients.console.app.InMemoryUploads`) and go only to the Matcher.
"""

from __future__ import annotations

from typing import Any

import grpc
from flask import Blueprint, flash, request

from clients.console.cases import case_page
from clients.console.context import OfficerSession, grpc_failure, officer, t

# Named "case_…": the navigation (base.html) marks the entry whose endpoint the request's endpoint starts with, and
# the page after an upload is a case's page.
blueprint = Blueprint("case_references", __name__)


@blueprint.post("/cases/<case_id>/references")
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
    return case_page(case_id, uploads)


def _register(session: OfficerSession, case_id: str, name: str, *, media: bytes | None = None,
              pdq: list[str] | None = None) -> dict[str, Any]:
    """Register one reference; what it created and matched, or why the Matcher refused it."""
    try:
        response = session.client.register_reference(case_id, media=media, pdq_hashes=pdq)
    except grpc.RpcError as error:
        return {"name": name, "error": grpc_failure(error)}
    hits = [{"signal": m.signal, "score": m.score, "threshold": m.threshold,
             "sighting_id": m.sighting_id or None, "reference_id": m.reference_id, "case_id": m.case_id}
            for m in response.matches]
    return {"name": name, "reference_id": response.reference_id, "created": response.created,
            "kind": response.media.kind, "hits": hits}
