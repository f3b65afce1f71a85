"""The crawler's side of `MatchStream`: one bidirectional gRPC stream, many items in flight, answers by item id.

A broken stream (the service restarted, a deadline) fails the items in flight with the gRPC error and is opened
again for the next item, so one hiccup costs a retry of those items, not the crawl.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from types import TracebackType

import grpc

from jiwoom.api.client import open_aio_channel
from jiwoom.api.proto_gen.jiwoom.v1 import matcher_pb2 as pb
from jiwoom.api.proto_gen.jiwoom.v1 import matcher_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)


class StreamFailed(Exception):
    """The stream broke before this item's answer came: the item may be retried."""


class MatchStreamer:
    def __init__(self, target: str, token: str, *, tls_ca: Path | None = None, timeout_s: float = 120.0) -> None:
        self._channel = open_aio_channel(target, tls_ca=tls_ca)
        self._stub = pb_grpc.MatcherStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._timeout_s = timeout_s
        self._call: grpc.aio.StreamStreamCall | None = None
        self._reader: asyncio.Task[None] | None = None
        # item id -> (the stream it was sent on, its answer)
        self._pending: dict[str, tuple[grpc.aio.StreamStreamCall, asyncio.Future[pb.StreamResponse]]] = {}
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> MatchStreamer:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._call is not None:
            with contextlib.suppress(Exception):
                await self._call.done_writing()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 10)
        await self._channel.close()

    def _open(self) -> grpc.aio.StreamStreamCall:
        if self._call is None or self._call.done():
            self._call = self._stub.MatchStream(metadata=self._metadata)
            self._reader = asyncio.create_task(self._read(self._call))
        return self._call

    async def _read(self, call: grpc.aio.StreamStreamCall) -> None:
        error: BaseException | None = None
        try:
            async for response in call:
                entry = self._pending.pop(response.item_id, None)
                if entry is not None and not entry[1].done():
                    entry[1].set_result(response)
        except grpc.aio.AioRpcError as rpc_error:
            error = rpc_error
            log.warning("match stream broke: %s %s", rpc_error.code().name, rpc_error.details())
        # Whatever was sent on this stream and is still waiting was lost with it.
        for item_id, (sent_on, future) in list(self._pending.items()):
            if sent_on is call:
                self._pending.pop(item_id, None)
                if not future.done():
                    future.set_exception(StreamFailed(f"the match stream ended before item {item_id}: {error}"))

    async def match(self, item_id: str, data: bytes, source: pb.Source) -> pb.StreamResponse:
        """Send one whole item and wait for its answer (an error answer is returned, not raised)."""
        if item_id in self._pending:
            raise ValueError(f"item {item_id} is already in flight")
        future: asyncio.Future[pb.StreamResponse] = asyncio.get_running_loop().create_future()
        async with self._lock:  # one writer at a time on the stream
            call = self._open()
            self._pending[item_id] = (call, future)
            try:
                await call.write(pb.StreamRequest(item_id=item_id, media=pb.StreamMedia(data=data, source=source)))
            except (grpc.aio.AioRpcError, grpc.aio.UsageError) as error:
                self._pending.pop(item_id, None)
                raise StreamFailed(f"could not send item {item_id}: {error}") from error
        try:
            return await asyncio.wait_for(future, self._timeout_s)
        finally:
            self._pending.pop(item_id, None)
