"""`jiwoom worker`, `evidence`, `notice`, `removals` and `console`: the officers' side.

They work on the same database as `jiwoom serve` (given by --database-url / $DATABASE_URL, or the embedded one in
the data directory, shared with a running service). Commands that reveal evidence or act on notices need an
officer's token (--token or $JIWOOM_TOKEN) and are written to the audit log under its name.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from psycopg_pool import ConnectionPool

from server.config import Settings, load_settings
from server.storage.store import Principal, Store, audit


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings()
    if args.data_dir:
        settings = replace(settings, service=replace(settings.service, data_dir=args.data_dir))
    return settings


@contextlib.contextmanager
def _pool(args: argparse.Namespace, settings: Settings, max_size: int = 3) -> Iterator[ConnectionPool]:
    from server.app import database
    from server.storage.db import open_pool

    with database(settings, args.database_url) as url, open_pool(url, max_size=max_size) as pool:
        yield pool


def _officer(pool: ConnectionPool, args: argparse.Namespace) -> Principal:
    token = args.token or os.environ.get("JIWOOM_TOKEN", "")
    who = Store(pool).principal(token) if token else None
    if who is None or who.role not in ("officer", "admin"):
        raise SystemExit("this needs an officer's token: --token or $JIWOOM_TOKEN (jiwoom token --role officer)")
    return who


# -- worker ------------------------------------------------------------------------------------------------------


def worker_command(args: argparse.Namespace) -> int:
    from clients.worker import Worker
    from jiwoom.api.client import MatcherClient, open_channel

    settings = _settings(args)
    token = settings.monitor.matcher_token
    if not token:
        raise SystemExit("the removal monitor asks the Matcher: set JIWOOM_MONITOR_MATCHER_TOKEN (role officer)")
    client = MatcherClient(open_channel(settings.monitor.matcher or settings.service.listen), token)

    def match_references(data: bytes) -> set[int]:
        return {m.reference_id for m in client.match(data).matches if m.reference_id}

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with _pool(args, settings) as pool:
        worker = Worker(settings, pool, match_references)
        if args.once:
            try:
                print(json.dumps(asyncio.run(worker.run_once())))
            finally:
                worker.close()
            return 0
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        worker.run(stop)
    return 0


# -- evidence ----------------------------------------------------------------------------------------------------


def verify_command(args: argparse.Namespace) -> int:
    from clients.evidence.writer import verify_artefacts
    from clients.worker import open_vault
    from server.storage import chain

    settings = _settings(args)
    with _pool(args, settings) as pool, pool.connection() as conn:
        result = chain.verify(conn)
        checked, artefact_problems = verify_artefacts(conn, open_vault(settings, create=False))
    problems = result.problems + artefact_problems
    print(json.dumps({"ok": not problems, "entries": result.entries, "head_seq": result.head_seq,
                      "head_hash": result.head_hash.hex(), "forgotten_payloads": result.forgotten_payloads,
                      "artefacts_checked": checked, "problems": problems}, indent=2))
    return 0 if not problems else 1


def report_command(args: argparse.Namespace) -> int:
    from clients.evidence.reports import hwpx_report, pdf_report
    from clients.evidence.store import captured_items_of_case
    from clients.evidence.writer import report_items
    from clients.worker import open_vault

    settings = _settings(args)
    with _pool(args, settings) as pool:
        who = _officer(pool, args)
        with pool.connection() as conn:
            ids = list(args.item or [])
            if args.case:
                ids += captured_items_of_case(conn, args.case)
            if not ids:
                raise SystemExit("no captured evidence items to report")
            items = report_items(conn, open_vault(settings, create=False), ids)
            audit(conn, who, "EvidenceReport", f"case:{args.case}" if args.case else "items",
                  {"items": ids, "format": args.format, "reveal": args.reveal})
    title = f"Evidence report: case {args.case}" if args.case else f"Evidence report: items {ids}"
    render = pdf_report if args.format == "pdf" else hwpx_report
    data = render(items, title=title, generated_at=datetime.now(UTC), generated_by=who.name,
                  language=args.language, reveal=args.reveal)
    Path(args.output).write_bytes(data)
    print(f"{args.output}: {len(items)} items, {len(data)} bytes")
    return 0


# -- notices -----------------------------------------------------------------------------------------------------


def notice_command(args: argparse.Namespace) -> int:
    from clients.notices.drafts import NoticeError, approve, cancel, edit, list_notices, notice_texts

    settings = _settings(args)
    with _pool(args, settings) as pool:
        if args.action == "list":
            with pool.connection() as conn:
                notices = list_notices(conn, state=args.state or "")
            for n in notices:
                print(f"{n.id:>6} {n.reference} {n.state:<9} {n.kind:<5} {n.site:<30} {n.language}"
                      f" {n.recipient or '(no recipient)'} priority {n.priority} items {n.items}")
            return 0
        if args.id is None:
            raise SystemExit(f"notice {args.action} needs a notice id")
        if args.action == "show":
            with pool.connection() as conn:
                found = list_notices(conn, notice_id=args.id)
                texts = notice_texts(conn, args.id)
            if not found:
                raise SystemExit(f"no notice {args.id}")
            n = found[0]
            if (args.language or n.language) not in texts:
                raise SystemExit(f"no text in {args.language!r}; languages: {', '.join(sorted(texts))}")
            subject, body, _ = texts[args.language or n.language]
            print(f"Notice {n.reference} ({n.state}) to {n.recipient or '(no recipient yet)'}\nSubject: {subject}"
                  f"\n\n{body}")
            return 0
        who = _officer(pool, args)
        try:
            with pool.connection() as conn:
                if args.action == "approve":
                    approve(conn, who, args.id)
                elif args.action == "cancel":
                    cancel(conn, who, args.id)
                else:
                    body = Path(args.body_file).read_text() if args.body_file else None
                    edit(conn, who, args.id, language=args.language, subject=args.subject, body=body,
                         recipient=args.recipient, send_language=args.send_language)
        except NoticeError as error:
            raise SystemExit(str(error)) from error
        print(f"notice {args.id}: {args.action} done")
    return 0


# -- removals ----------------------------------------------------------------------------------------------------


def removals_command(args: argparse.Namespace) -> int:
    from clients.monitor import removal_chart_svg, removal_csv, removal_report

    settings = _settings(args)
    with _pool(args, settings) as pool, pool.connection() as conn:
        report = removal_report(conn)
    if args.csv:
        Path(args.csv).write_text(removal_csv(report))
    if args.svg:
        Path(args.svg).write_text(removal_chart_svg(report))
    if not (args.csv or args.svg):
        sys.stdout.write(removal_csv(report))
    return 0


# -- console -----------------------------------------------------------------------------------------------------


def console_command(args: argparse.Namespace) -> int:
    from clients.console.app import Console, create_app, serving
    from clients.evidence.vault import VaultError
    from clients.worker import drafting, open_vault
    from jiwoom.api.client import open_channel

    settings = _settings(args)
    options = settings.console
    listen = args.listen or options.listen
    matcher = options.matcher or settings.service.listen
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        vault = open_vault(settings, create=False)
    except VaultError as error:
        raise SystemExit(f"{error}: start jiwoom serve once first (it creates the key), or set "
                         "JIWOOM_EVIDENCE_KEY_FILE") from error
    channel = open_channel(matcher, tls_ca=Path(options.matcher_tls_ca) if options.matcher_tls_ca else None)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with _pool(args, settings, max_size=options.threads + 2) as pool:
        console = Console(settings, pool, vault, drafting(settings), channel)
        with serving(create_app(console), listen, options.threads) as port:
            host = listen.rpartition(":")[0] or "127.0.0.1"
            print(f"jiwoom console on http://{host}:{port}/ (Matcher at {matcher}); Ctrl-C stops", flush=True)
            stop.wait()
    channel.close()
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    def common(parser: argparse.ArgumentParser, token: bool = True) -> argparse.ArgumentParser:
        parser.add_argument("--database-url", help="PostgreSQL conninfo (default $DATABASE_URL, else embedded)")
        parser.add_argument("--data-dir", help="data directory of the embedded PostgreSQL and the evidence key")
        if token:
            parser.add_argument("--token", help="an officer's API token (default $JIWOOM_TOKEN)")
        return parser

    worker = common(commands.add_parser("worker", help="capture evidence, draft and send notices, re-check removals"))
    worker.add_argument("--once", action="store_true", help="one pass, then exit")
    worker.set_defaults(run=worker_command)

    evidence = commands.add_parser("evidence", help="the evidence store").add_subparsers(dest="action", required=True)
    common(evidence.add_parser("verify", help="check the evidence log's hash chain and every stored artefact")
           ).set_defaults(run=verify_command)
    report = common(evidence.add_parser("report", help="an evidence report (PDF or HWPX) for items or a case"))
    report.add_argument("--item", type=int, action="append", help="an evidence item id (repeatable)")
    report.add_argument("--case", help="every captured item of a case")
    report.add_argument("--format", choices=("pdf", "hwpx"), default="pdf")
    report.add_argument("--language", choices=("ko", "en"), default="ko")
    report.add_argument("--reveal", action="store_true",
                        help="embed the screenshots unblurred (by default they are blurred and grey)")
    report.add_argument("-o", "--output", required=True)
    report.set_defaults(run=report_command)

    notice = common(commands.add_parser("notice", help="takedown notices: list, show, edit, approve, cancel"))
    notice.add_argument("action", choices=("list", "show", "edit", "approve", "cancel"))
    notice.add_argument("id", type=int, nargs="?")
    notice.add_argument("--state", help="list: only notices in this state")
    notice.add_argument("--language", help="show/edit: which language's text")
    notice.add_argument("--subject")
    notice.add_argument("--body-file", help="edit: the new body, from a file")
    notice.add_argument("--recipient", help="edit: the abuse contact to send to")
    notice.add_argument("--send-language", help="edit: the language the notice goes out in")
    notice.set_defaults(run=notice_command)

    removals = common(commands.add_parser("removals", help="time-to-removal per site (CSV, SVG chart)"))
    removals.add_argument("--csv", help="write the CSV here (default: print it)")
    removals.add_argument("--svg", help="write the chart here")
    removals.set_defaults(run=removals_command)

    # Officers log in to the console with their own tokens: it takes none on the command line.
    console = common(commands.add_parser("console", help="the officers' web console (review queue, notices, cases)"),
                     token=False)
    console.add_argument("--listen", help="host:port (JIWOOM_CONSOLE_LISTEN, default 127.0.0.1:8080)")
    console.set_defaults(run=console_command)
