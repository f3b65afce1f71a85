"""Shared fixtures: the dev corpus and one in-process inference per test session (models load once)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bench.transforms import CORPUS
from server.config import Settings
from server.inference import Inference
from server.inference.inprocess import InProcessInference

ASTRONAUT = "img_0243.jpg"  # scikit-image's astronaut: an adult woman, about 40 in the photo
GRACE_HOPPER = "img_0265.jpg"  # matplotlib's Grace Hopper, about 77


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not (CORPUS / "images").is_dir():
        pytest.fail(f"dev corpus not found at {CORPUS} (set JIWOOM_CORPUS)")
    return CORPUS


@pytest.fixture(scope="session")
def inference() -> Iterator[Inference]:
    with InProcessInference(Settings()) as engine:
        yield engine


# --- PostgreSQL -------------------------------------------------------------------------------------------------
# One throwaway cluster per session (initdb costs about a second), one fresh database per test.


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from server.db import local_postgres

    with local_postgres(tmp_path_factory.mktemp("postgres"), binaries="system") as conninfo:
        yield conninfo


@contextmanager
def fresh_database(postgres_server: str) -> Iterator[str]:
    """A new empty database in the session's cluster, dropped afterwards (open connections are ended first)."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(postgres_server, dbname=name)
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as admin:
            # A test may leave connections (or a pool) open: end them so the drop cannot fail or hang.
            admin.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity where datname = %s and pid <> pg_backend_pid()",
                (name,),
            )
            admin.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


@pytest.fixture
def database_url(postgres_server: str) -> Iterator[str]:
    with fresh_database(postgres_server) as url:
        yield url
