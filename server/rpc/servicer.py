"""The gRPC face of the matching service: jiwoom.v1.Matcher, bearer-token roles, health and reflection.

Messages are translated to and from `server.service.MatchingService`; nothing here decides a match. Every
failure leaves as a gRPC status with a message that is safe to show the caller.
"""

from __future__ import annotations

import contextvars
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass
from datetime import UTC

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from jiwoom.api.client import channel_options
from jiwoom.api.errors import InvalidInput, grpc_status
from jiwoom.api.proto_gen.jiwoom.v1 import matcher_pb2 as pb
from jiwoom.api.proto_gen.jiwoom.v1 import matcher_pb2_grpc as pb_grpc
from server.config import Settings
from server.matching.decisions import Thresholds
from server.matching.library import IndexStat
from server.matching.youth import FaceReport
from server.service import MatchingService, MatchOutcome, TargetMatch
from server.signals import SIGNALS
from server.storage.store import Principal, SourceRecord, Store

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Matcher"].full_name
# Which roles may call what. The crawler only streams and matches; forgetting and the negative bank need a
# person (officer) or the case system acting for one.
PERMISSIONS: dict[str, frozenset[str]] = {
    "RegisterReference": frozenset({"case_system", "officer", "admin"}),
    "Match": frozenset({"crawler", "case_system", "officer", "admin"}),
    "MatchStream": frozenset({"crawler", "admin"}),
    "ForgetReference": frozenset({"case_system", "officer", "admin"}),
    "ForgetCase": frozenset({"case_system", "officer", "admin"}),
    "ConfigureCase": frozenset({"officer", "admin"}),
    "MarkBenign": frozenset({"officer", "admin"}),
    "RecordIdentifiers": frozenset({"case_system", "officer", "admin"}),
    "GetStats": frozenset({"crawler", "case_system", "officer", "admin"}),
}
TOKEN_CACHE_S = 30.0  # a revoked token stops working within this

_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("principal")


class AuthInterceptor(grpc.ServerInterceptor):
    """Checks `authorization: Bearer <token>` on every Matcher RPC against the token table and the role's
    permissions. Health checks and reflection pass without a token (probes and grpcurl need them)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def _lookup(self, token: str) -> Principal | None:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(token)
        if cached and now - cached[0] < TOKEN_CACHE_S:
            return cached[1]
        principal = self.store.principal(token)
        with self._lock:
            if len(self._cache) > 10_000:  # bounded: random tokens from an attacker must not grow it forever
                self._cache.clear()
            self._cache[token] = (now, principal)
        return principal

    def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        handler = continuation(details)
        prefix = f"/{SERVICE_NAME}/"
        if handler is None or not details.method.startswith(prefix):
            return handler
        method = details.method[len(prefix):]
        metadata = dict(details.invocation_metadata or ())
        header = metadata.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        principal = self._lookup(token) if token else None
        if principal is None:
            return _refusal(handler, grpc.StatusCode.UNAUTHENTICATED,
                            "a valid bearer token is required (metadata 'authorization: Bearer <token>')")
        if principal.role not in PERMISSIONS.get(method, frozenset()):
            return _refusal(handler, grpc.StatusCode.PERMISSION_DENIED,
                            f"role {principal.role!r} may not call {method}")
        return _with_principal(handler, principal)


def _refusal(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    def abort(_request: object, context: grpc.ServicerContext) -> None:
        context.abort(code, message)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)


def _with_principal(handler: grpc.RpcMethodHandler, principal: Principal) -> grpc.RpcMethodHandler:
    """The same handler, run with the caller's principal set (the behaviour runs in the worker thread)."""

    def unary(behaviour: Callable) -> Callable:
        def run(request: object, context: grpc.ServicerContext) -> object:
            token = _principal.set(principal)
            try:
                return behaviour(request, context)
            finally:
                _principal.reset(token)

        return run

    def streaming(behaviour: Callable) -> Callable:
        def run(request: object, context: grpc.ServicerContext) -> Iterator[object]:
            token = _principal.set(principal)  # a generator: keep the principal set while it runs
            try:
                yield from behaviour(request, context)
            finally:
                _principal.reset(token)

        return run

    return wrapped_handler(handler, unary, streaming)


def wrapped_handler(handler: grpc.RpcMethodHandler, unary: Callable[[Callable], Callable],
                    streaming: Callable[[Callable], Callable]) -> grpc.RpcMethodHandler:
    """The same handler with its behaviour wrapped: by `streaming` where it answers with a stream, else `unary`."""
    kinds = {
        (False, False): (grpc.unary_unary_rpc_method_handler, handler.unary_unary),
        (True, False): (grpc.stream_unary_rpc_method_handler, handler.stream_unary),
        (False, True): (grpc.unary_stream_rpc_method_handler, handler.unary_stream),
        (True, True): (grpc.stream_stream_rpc_method_handler, handler.stream_stream),
    }
    make, behaviour = kinds[(handler.request_streaming, handler.response_streaming)]
    wrapped = streaming(behaviour) if handler.response_streaming else unary(behaviour)
    return make(wrapped, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)


# -- message translation -----------------------------------------------------------------------------------------------


def source_record(source: pb.Source) -> SourceRecord:
    if not source.url:
        raise InvalidInput("a source needs the media's url")
    posted = source.posted_at.ToDatetime(tzinfo=UTC) if source.HasField("posted_at") else None
    return SourceRecord(source.url, source.page_url, source.site, source.title, source.author, posted, source.text,
                        source.suspected, dict(source.extra))


def source_message(record: SourceRecord | None) -> pb.Source | None:
    if record is None:
        return None
    message = pb.Source(url=record.url, page_url=record.page_url, site=record.site, title=record.title,
                        author=record.author, text=record.text, suspected=record.suspected,
                        extra=record.extra or {})
    if record.posted_at is not None:
        message.posted_at.FromDatetime(record.posted_at)
    return message


def _box(values: tuple[float, ...]) -> pb.Box:
    return pb.Box(x0=values[0], y0=values[1], x1=values[2], y1=values[3])


def face_message(face: FaceReport) -> pb.FaceAge:
    return pb.FaceAge(timestamp_s=face.timestamp, box=_box(face.box), age_mean=face.age_mean, age_std=face.age_std,
                      p_under_19=face.p_under19, under_19=face.under_19)


def threshold_overrides(message: pb.Thresholds) -> dict[str, float]:
    """A case's overrides by signal name, from the typed fields and the by-name map (each signal checks its
    bounds in the service)."""
    overrides = {str(name): float(value) for name, value in message.by_signal.items()}
    for name, signal in SIGNALS.items():
        field = signal.proto_threshold_field
        if field and message.HasField(field):
            value = float(getattr(message, field))
            if name in overrides and not math.isclose(overrides[name], value, rel_tol=1e-6):
                raise InvalidInput(f"{field} and by_signal[{name!r}] disagree")
            overrides[name] = value
    return overrides


def thresholds_message(thresholds: Thresholds) -> pb.Thresholds:
    message = pb.Thresholds(by_signal=dict(thresholds.values))
    for name, value in thresholds.values.items():
        field = SIGNALS[name].proto_threshold_field
        if field:  # the typed field keeps its proto type (pdq_max_distance is an int)
            setattr(message, field, type(getattr(message, field))(value))
    return message


def match_message(match: TargetMatch) -> pb.Match:
    r = match.result
    return pb.Match(
        target=pb.TARGET_SIGHTING if match.sighting_id else pb.TARGET_REFERENCE,
        reference_id=match.reference_id, case_id=match.case_id, sighting_id=match.sighting_id,
        sighting_source=source_message(match.source), signal=SIGNALS[r.signal].proto_value,
        signal_name=r.signal, score=r.score,
        threshold=r.threshold, query_segment=pb.Segment(start_s=r.query_segment[0], end_s=r.query_segment[1]),
        target_segment=pb.Segment(start_s=r.target_segment[0], end_s=r.target_segment[1]),
        matched_frames=r.matched_frames, query_box=_box(r.query_box), faces=[face_message(f) for f in r.faces],
        under_19=r.under_19, confidence=confidence_message(match),
    )


def confidence_message(match: TargetMatch) -> pb.Confidence | None:
    r = match.result
    if r.p_false is None:
        return None
    return pb.Confidence(
        p_false=r.p_false, expected_false_matches=r.expected_false or 0.0,
        verification=pb.VERIFICATION_VERIFIED if r.verification == "verified" else pb.VERIFICATION_NOT_NEEDED,
        face_only=match.face_only, audio_only=match.audio_only,
        normalised_score=r.normalised if r.normalised is not None else 0.0)


def outcome_message(outcome: MatchOutcome) -> pb.MatchResponse:
    media = outcome.media
    return pb.MatchResponse(
        media=pb.MediaInfo(kind=media.kind, sha256=media.sha256.hex() if media.kind != "frames" else "",
                           width=media.width, height=media.height, duration_s=media.duration_s, frames=media.frames),
        sighting_id=outcome.sighting_id, matches=[match_message(m) for m in outcome.matches],
        youth_faces=[face_message(f) for f in outcome.youth_faces], benign=outcome.benign,
        exposures=[pb.Exposure(case_id=e.case_id or "", kind=e.kind, field=e.field) for e in outcome.exposures],
        redacted_title=outcome.redacted.title if outcome.redacted else "",
        redacted_text=outcome.redacted.text if outcome.redacted else "",
    )


def stats_message(counts: dict[str, int], indexes: list[IndexStat], inference: str, uptime: float) -> pb.Stats:
    return pb.Stats(
        **counts, inference=inference, uptime_s=uptime,
        indexes=[pb.IndexStats(collection=i.collection, signal=SIGNALS[i.signal].proto_value,
                               signal_name=i.signal, vectors=i.vectors,
                               owners=i.owners, memory_bytes=i.memory_bytes, device=i.device) for i in indexes],
    )


# -- the servicer ------------------------------------------------------------------------------------------------------


@dataclass
class _OpenItem:
    frames: list[tuple[bytes, float]]
    size: int = 0


class MatcherServicer(pb_grpc.MatcherServicer):
    def __init__(self, service: MatchingService) -> None:
        self.service = service
        self.settings = service.settings.service

    def _deadline(self, context: grpc.ServicerContext) -> float:
        remaining = context.time_remaining()
        budget = self.settings.default_deadline_s if remaining is None else min(remaining,
                                                                                self.settings.default_deadline_s)
        return time.monotonic() + budget

    def _call(self, context: grpc.ServicerContext, work: Callable[[], object]) -> object:
        """Run `work`, turning every failure into a gRPC status (never a stack trace to the caller)."""
        try:
            return work()
        except Exception as error:
            code, message = grpc_status(error)
            if code is grpc.StatusCode.INTERNAL:  # not a typed failure: its details stay in our log
                log.exception("%s failed", type(self).__name__)
            context.abort(code, message)
        raise AssertionError("unreachable")

    def RegisterReference(self, request: pb.RegisterReferenceRequest, context: grpc.ServicerContext
                          ) -> pb.RegisterReferenceResponse:
        def work() -> pb.RegisterReferenceResponse:
            content = request.WhichOneof("content")
            outcome = self.service.register_reference(
                _principal.get(), request.case_id,
                data=request.media if content == "media" else None,
                pdq_hashes=list(request.pdq.hashes) if content == "pdq" else None,
                retro_hunt=not request.skip_retro_hunt, deadline=self._deadline(context))
            media = outcome.media
            return pb.RegisterReferenceResponse(
                reference_id=outcome.reference_id, case_id=outcome.case_id, created=outcome.created,
                media=pb.MediaInfo(kind=media.kind, sha256=media.sha256.hex() if media.kind != "hashes" else "",
                                   width=media.width, height=media.height, duration_s=media.duration_s,
                                   frames=media.frames),
                matches=[match_message(m) for m in outcome.matches])

        return self._call(context, work)  # type: ignore[return-value]

    def Match(self, request: pb.MatchRequest, context: grpc.ServicerContext) -> pb.MatchResponse:
        def work() -> pb.MatchResponse:
            source = source_record(request.source) if request.HasField("source") else None
            return outcome_message(self.service.match(
                _principal.get(), request.media, source=source, include_sightings=request.include_sightings,
                deadline=self._deadline(context)))

        return self._call(context, work)  # type: ignore[return-value]

    def MatchStream(self, requests: Iterator[pb.StreamRequest], context: grpc.ServicerContext
                    ) -> Iterator[pb.StreamResponse]:
        """Items in, one result per item out. Per-item failures become error results; the stream goes on."""
        principal = _principal.get()
        open_items: dict[str, _OpenItem] = {}
        refused: set[str] = set()  # items already answered with an error: their remaining frames are dropped
        max_frames = self.service.settings.limits.max_frames
        for request in requests:
            item_id, payload = request.item_id, request.WhichOneof("payload")
            if not item_id:
                yield _stream_error("", grpc.StatusCode.INVALID_ARGUMENT, "item_id is required")
                continue
            if item_id in refused and payload in ("frame", "end"):
                if payload == "end":
                    refused.discard(item_id)
                continue
            if payload == "frame":
                item = open_items.get(item_id)
                if item is None:
                    if len(open_items) >= self.settings.stream_max_open_items:
                        refused.add(item_id)
                        yield _stream_error(item_id, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                            f"over {self.settings.stream_max_open_items} items open on this stream")
                        continue
                    item = open_items[item_id] = _OpenItem([])
                frame = request.frame
                item.size += len(frame.image)
                # Bounded memory per stream: open items x the message limit, whatever a crawler sends.
                if (len(frame.image) > self.settings.stream_max_frame_bytes or len(item.frames) >= max_frames
                        or item.size > self.settings.max_message_bytes):
                    open_items.pop(item_id)
                    if len(refused) >= 10_000:  # bounded whatever a client sends
                        refused.clear()
                    refused.add(item_id)
                    yield _stream_error(item_id, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                        f"frames are limited to {max_frames} per item, "
                                        f"{self.settings.stream_max_frame_bytes} bytes each and "
                                        f"{self.settings.max_message_bytes} bytes per item")
                    continue
                item.frames.append((frame.image, frame.timestamp_s))
                continue
            if payload == "media":
                media = request.media
                yield self._stream_item(principal, context, item_id, data=media.data, source=media.source,
                                        include_sightings=media.include_sightings)
            elif payload == "end":
                item = open_items.pop(item_id, None)
                if item is None:
                    yield _stream_error(item_id, grpc.StatusCode.INVALID_ARGUMENT, "end of an item with no frames")
                    continue
                yield self._stream_item(principal, context, item_id, frames=item.frames, source=request.end.source,
                                        include_sightings=request.end.include_sightings)
            else:
                yield _stream_error(item_id, grpc.StatusCode.INVALID_ARGUMENT, "empty payload")
        for item_id in open_items:
            yield _stream_error(item_id, grpc.StatusCode.INVALID_ARGUMENT, "stream closed before the item's end")

    def _stream_item(self, principal: Principal, context: grpc.ServicerContext, item_id: str, *,
                     data: bytes | None = None, frames: list[tuple[bytes, float]] | None = None,
                     source: pb.Source, include_sightings: bool) -> pb.StreamResponse:
        try:
            record = source_record(source)
            outcome = self.service.match(principal, data, frames=frames, source=record,
                                         include_sightings=include_sightings, deadline=self._deadline(context))
            return pb.StreamResponse(item_id=item_id, result=outcome_message(outcome))
        except Exception as error:
            code, message = grpc_status(error)
            if code is grpc.StatusCode.INTERNAL:
                log.exception("stream item failed")
            return _stream_error(item_id, code, message)

    def ForgetReference(self, request: pb.ForgetReferenceRequest, context: grpc.ServicerContext
                        ) -> pb.ForgetResponse:
        return self._forget(context, request.reason, reference_id=request.reference_id)

    def ForgetCase(self, request: pb.ForgetCaseRequest, context: grpc.ServicerContext) -> pb.ForgetResponse:
        return self._forget(context, request.reason, case_id=request.case_id)

    def _forget(self, context: grpc.ServicerContext, reason: str, **target: int | str) -> pb.ForgetResponse:
        def work() -> pb.ForgetResponse:
            count, matches = self.service.forget(_principal.get(), reason=reason, **target)  # type: ignore[arg-type]
            return pb.ForgetResponse(references_forgotten=count, matches_deleted=matches)

        return self._call(context, work)  # type: ignore[return-value]

    def ConfigureCase(self, request: pb.ConfigureCaseRequest, context: grpc.ServicerContext) -> pb.Case:
        def work() -> pb.Case:
            if not request.case_id:
                raise InvalidInput("case_id is required")
            overrides = threshold_overrides(request.thresholds)
            thresholds, references = self.service.configure_case(_principal.get(), request.case_id, overrides)
            return pb.Case(case_id=request.case_id, references=references, thresholds=thresholds_message(thresholds))

        return self._call(context, work)  # type: ignore[return-value]

    def MarkBenign(self, request: pb.MarkBenignRequest, context: grpc.ServicerContext) -> pb.MarkBenignResponse:
        def work() -> pb.MarkBenignResponse:
            content = request.WhichOneof("content")
            benign_id = self.service.mark_benign(
                _principal.get(), data=request.media if content == "media" else None,
                sighting_id=request.sighting_id if content == "sighting_id" else None, note=request.note,
                case_id=request.case_id or None)
            return pb.MarkBenignResponse(benign_id=benign_id)

        return self._call(context, work)  # type: ignore[return-value]

    def RecordIdentifiers(self, request: pb.RecordIdentifiersRequest, context: grpc.ServicerContext
                          ) -> pb.RecordIdentifiersResponse:
        def work() -> pb.RecordIdentifiersResponse:
            stored, total = self.service.record_identifiers(
                _principal.get(), request.case_id, [(i.kind, i.value) for i in request.identifiers])
            return pb.RecordIdentifiersResponse(stored=stored, total=total)

        return self._call(context, work)  # type: ignore[return-value]

    def GetStats(self, request: pb.GetStatsRequest, context: grpc.ServicerContext) -> pb.Stats:
        def work() -> pb.Stats:
            counts, indexes = self.service.stats()
            return stats_message(counts, indexes, self.service.settings.inference,
                                 time.monotonic() - self.service.started_at)

        return self._call(context, work)  # type: ignore[return-value]


def _stream_error(item_id: str, code: grpc.StatusCode, message: str) -> pb.StreamResponse:
    return pb.StreamResponse(item_id=item_id, error_code=code.value[0], error_message=message)


# -- the server --------------------------------------------------------------------------------------------------------


@dataclass
class Serving:
    """A started gRPC server, its bound port, and its health service."""

    server: grpc.Server
    port: int
    health: health.HealthServicer

    def stop(self, notice_s: float, grace_s: float) -> None:
        """NOT_SERVING first (health checks and watches see it), then after `notice_s` new calls are refused
        and in-flight ones get `grace_s` to finish."""
        self.health.enter_graceful_shutdown()
        if notice_s > 0:
            time.sleep(notice_s)
        self.server.stop(grace_s).wait()


def build_server(service: MatchingService, settings: Settings,
                 interceptors: Sequence[grpc.ServerInterceptor] = ()) -> Serving:
    """A started gRPC server with the Matcher, health and reflection; `interceptors` run before the token check."""
    config = settings.service
    options = [*channel_options(config.max_message_bytes), ("grpc.so_reuseport", 0)]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.max_concurrent_rpcs, thread_name_prefix="rpc"),
        interceptors=[*interceptors, AuthInterceptor(service.store)], options=options,
        maximum_concurrent_rpcs=config.max_concurrent_rpcs,
    )
    pb_grpc.add_MatcherServicer_to_server(MatcherServicer(service), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    if config.tls_cert and config.tls_key:
        with open(config.tls_key, "rb") as key, open(config.tls_cert, "rb") as cert:
            credentials = grpc.ssl_server_credentials([(key.read(), cert.read())])
        port = server.add_secure_port(config.listen, credentials)
    else:
        port = server.add_insecure_port(config.listen)
    if not port:
        raise RuntimeError(f"cannot listen on {config.listen}")
    server.start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return Serving(server, port, health_servicer)
