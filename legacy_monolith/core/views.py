"""Site-wide pages: home, health, file upload and the slow sales report."""

from __future__ import annotations

import asyncio
import sqlite3

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from legacy_monolith import csrf, db, settings
from legacy_monolith.core import models
from legacy_monolith.shortcuts import database, json_response, render


def home(request: Request) -> Response:
    return render(request, "core/home.html", title="Legacy Shop")


def health_live(request: Request) -> Response:
    return json_response({"status": "ok"})


def health_ready(request: Request) -> Response:
    """Ready when the database answers and every migration has been applied."""
    try:
        pending = db.unapplied_migrations(database(request))
    except sqlite3.Error as exc:
        return json_response({"status": "unavailable", "database": str(exc)}, status=503)
    if pending:
        return json_response({"status": "unavailable", "unapplied_migrations": pending}, status=503)
    return json_response({"status": "ok"})


@csrf.csrf_protect
async def upload(request: Request) -> Response:
    context = {"uploaded": None, "error": ""}
    if request.method == "POST":
        file = request.state.form.files.get("file")
        if file is None or not file.filename:
            context["error"] = "Choose a file to upload."
        else:
            user = request.scope.get("user")
            context["uploaded"] = await run_in_threadpool(
                models.save_upload, database(request), request.app.state.upload_dir, filename=file.filename,
                content_type=file.content_type, content=file.content, uploaded_by=user["id"] if user else None,
            )
    context["uploads"] = await run_in_threadpool(models.list_uploads, database(request))
    return render(request, "core/upload.html", context, title="Uploads", status=400 if context["error"] else 200)


async def slow_report(request: Request) -> Response:
    """Takes its time on purpose (like the real one, with its full-table scans): for timeouts."""
    try:
        seconds = float(request.query_params.get("seconds", settings.SLOW_REPORT_DEFAULT_S))
    except ValueError:
        seconds = settings.SLOW_REPORT_DEFAULT_S
    await asyncio.sleep(min(max(seconds, 0.0), settings.SLOW_REPORT_MAX_S))
    rows = await run_in_threadpool(models.sales_by_product, database(request))
    return render(request, "core/slow_report.html", {"rows": rows, "seconds": seconds}, title="Sales report")
