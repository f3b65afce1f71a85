"""Removals: what came down after its notice, how long each site took (a chart and a CSV), and what is still up."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, render_template
from markupsafe import Markup

from clients.console.context import current_console, t
from clients.console.store import ItemView, notified_items
from clients.monitor import removal_chart_svg, removal_csv, removal_report

blueprint = Blueprint("removals", __name__)


@blueprint.get("/removals")
def removals() -> Any:
    with current_console().pool.connection() as conn:
        report = removal_report(conn)
        items = notified_items(conn)
    chart = removal_chart_svg(report, title=t("chart_title"), labels={
        "none": t("chart_none"), "not_removed": t("chart_not_removed"), "hours": t("chart_hours"),
        "counts": t("chart_counts")})
    by_site: dict[str, list[ItemView]] = {}
    for shown in items:
        by_site.setdefault(shown.site, []).append(shown)
    return render_template("removals.html", report=report, chart=Markup(chart), by_site=by_site)


@blueprint.get("/removals.csv")
def removals_csv() -> Any:
    with current_console().pool.connection() as conn:
        report = removal_report(conn)
    return Response(removal_csv(report), mimetype="text/csv",
                    headers={"Content-Disposition": "attachment; filename=removals.csv"})
