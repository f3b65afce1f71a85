"""The review queue: open, confirmed and rejected items, most urgent (or surest, or oldest) first. Officers decide on
them in place; the decisions are `clients.console.items`'s (they are posted to the item's URL)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, render_template, request, url_for

from clients.console.context import current_console
from clients.console.store import QUEUE_ORDERS, QUEUE_STATES, queue_counts, queue_page
from clients.evidence.writer import enqueue_items

blueprint = Blueprint("queue", __name__)
PAGE_SIZE = 50


@blueprint.get("/")
def home() -> Any:
    return redirect(url_for("queue.queue"))


@blueprint.get("/queue")
def queue() -> Any:
    console = current_console()
    show = request.args.get("show", "open")
    if show not in QUEUE_STATES:
        show = "open"
    page = max(0, request.args.get("page", 0, type=int))
    order = request.args.get("order", "urgency")
    if order not in QUEUE_ORDERS:
        order = "urgency"
    with console.pool.connection() as conn:
        # Matches the worker has not picked up yet belong in the queue at once.
        enqueue_items(conn, console.vault)
        items, total = queue_page(conn, QUEUE_STATES[show], limit=PAGE_SIZE, offset=page * PAGE_SIZE, order=order)
        counts = queue_counts(conn)
    return render_template("queue.html", items=items, total=total, show=show, page=page, counts=counts,
                           order=order, orders=list(QUEUE_ORDERS))
