"""Prometheus metrics of the action worker: how much waits at each of its steps, read from PostgreSQL when scraped.

The queues live in the database, shared by every worker, so each replica reports the same numbers (aggregate them
with max, not sum). `jiwoom serve` adds this collector to its replica's registry, over the service's pool: the
worker's own (two connections) may both be busy for a capture's length.
"""

from __future__ import annotations

import logging

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)

QUEUES = ("capture", "approval", "send", "removal_check")
SCRAPE_TIMEOUT_S = 5.0  # waiting longer for a connection of a busy pool would hold up the scrape
# One statement, so the numbers are of one moment. The conditions of the worker's own picks (clients.evidence.store,
# clients.notices.store: captures, notices to send, due checks), whether a worker has claimed the item yet or not;
# the drafts wait on an officer.
_DEPTHS = (
    "select (select count(*) from evidence_items where capture_state = 'pending' and review_state <> 'rejected'),"
    " (select count(*) from notices where state = 'draft'),"
    " (select count(*) from notices where state = 'approved' or (state = 'failed' and attempts < %s)),"
    " (select count(*) from evidence_items where removal_state in ('notified', 'still_up') and next_check_at <= now())"
)


class WorkerQueues(Collector):
    """`jiwoom_worker_queue_items{queue}`: evidence items waiting for capture, drafted notices waiting for an
    officer's approval, approved (or retryable failed) notices waiting to be sent, notified items whose removal
    check is due. A failing read is logged and leaves them out: a scrape must not fail with the database."""

    def __init__(self, pool: ConnectionPool, max_send_attempts: int) -> None:
        self.pool = pool
        self.max_send_attempts = max_send_attempts

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily("jiwoom_worker_queue_items", "Items waiting at each step of the action worker.",
                                 labels=["queue"])

    def describe(self) -> list[Metric]:
        return [self._family()]

    def collect(self) -> list[Metric]:
        family = self._family()
        try:
            with self.pool.connection(timeout=SCRAPE_TIMEOUT_S) as conn:
                row = conn.execute(_DEPTHS, (self.max_send_attempts,)).fetchone()
        except Exception:
            log.warning("the worker's queue depths could not be read for the metrics", exc_info=True)
            return [family]
        for queue, depth in zip(QUEUES, row or (0,) * len(QUEUES), strict=True):  # counts: always one row
            family.add_metric([queue], depth)
        return [family]
