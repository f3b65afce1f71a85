"""A thin client of jiwoom.v1.Matcher: the one channel builder (explicit limits, TLS), the bearer token on every
call.

The crawler (its asyncio stream too), the case-system client, the console, the monitor and the tests all use it,
so message limits and deadlines are set once. Part of the API layer: it imports nothing of ours but the
generated code.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import grpc

from jiwoom.api.proto_gen.jiwoom.v1 import matcher_pb2 as pb
from jiwoom.api.proto_gen.jiwoom.v1 import matcher_pb2_grpc as pb_grpc

MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # the server's default limit (ServiceSettings.max_message_bytes)
DEFAULT_TIMEOUT_S = 120.0


ROUND_ROBIN = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


def channel_options(max_message_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    """gRPC's 4 MiB default is too small for media: the same limit both ways."""
    return [("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes)]


def _client_options(max_message_bytes: int) -> list[tuple[str, int | str]]:
    """Calls spread over every address the target resolves to: gRPC's own round_robin (its default, pick_first,
    sends them all to one)."""
    return [*channel_options(max_message_bytes), ("grpc.service_config", ROUND_ROBIN)]


def channel_target(target: str) -> str:
    """A gRPC target for one replica (host:port, or any gRPC name such as dns:///matcher.internal:50051, whose
    addresses are all used) or for several, comma-separated (127.0.0.1:50051,127.0.0.1:50052): gRPC's static
    address list, ipv4:a,b or ipv6:[a],[b]."""
    addresses = [a.strip() for a in target.split(",") if a.strip()]
    if len(addresses) <= 1 or target.startswith(("ipv4:", "ipv6:")):
        return target
    if all(a.startswith("[") for a in addresses):
        return "ipv6:" + ",".join(addresses)
    hosts = [a.rsplit(":", 1)[0] for a in addresses]
    if not all(h.count(".") == 3 and h.replace(".", "").isdigit() for h in hosts):
        raise ValueError(f"several replicas are listed by IP address (host names: one dns:/// name that resolves "
                         f"to all of them), got {target!r}")
    return "ipv4:" + ",".join(addresses)


def _credentials(tls_ca: Path | None, tls: bool) -> grpc.ChannelCredentials | None:
    """TLS with `tls_ca` as the root, or with the system's roots when only `tls` is set; else plaintext (None)."""
    if tls_ca is None and not tls:
        return None
    return grpc.ssl_channel_credentials(root_certificates=Path(tls_ca).read_bytes() if tls_ca else None)


def open_channel(target: str, *, tls_ca: Path | None = None, tls: bool = False,
                 max_message_bytes: int = MAX_MESSAGE_BYTES) -> grpc.Channel:
    credentials, options = _credentials(tls_ca, tls), _client_options(max_message_bytes)
    if credentials is not None:
        return grpc.secure_channel(channel_target(target), credentials, options=options)
    return grpc.insecure_channel(channel_target(target), options=options)


def open_aio_channel(target: str, *, tls_ca: Path | None = None, tls: bool = False,
                     max_message_bytes: int = MAX_MESSAGE_BYTES) -> grpc.aio.Channel:
    """The same channel for asyncio callers (the crawler's MatchStream)."""
    credentials, options = _credentials(tls_ca, tls), _client_options(max_message_bytes)
    if credentials is not None:
        return grpc.aio.secure_channel(channel_target(target), credentials, options=options)
    return grpc.aio.insecure_channel(channel_target(target), options=options)


class MatcherClient:
    def __init__(self, channel: grpc.Channel, token: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.channel = channel
        self.stub = pb_grpc.MatcherStub(channel)
        self.metadata = (("authorization", f"Bearer {token}"),)
        self.timeout_s = timeout_s

    def _call(self, method: str, request: object, timeout_s: float | None = None) -> object:
        return getattr(self.stub, method)(request, metadata=self.metadata, timeout=timeout_s or self.timeout_s)

    def register_reference(self, case_id: str, media: bytes | None = None, pdq_hashes: list[str] | None = None,
                           skip_retro_hunt: bool = False) -> pb.RegisterReferenceResponse:
        request = pb.RegisterReferenceRequest(case_id=case_id, skip_retro_hunt=skip_retro_hunt)
        if media is not None:
            request.media = media
        else:
            request.pdq.hashes.extend(pdq_hashes or [])
        return self._call("RegisterReference", request)  # type: ignore[return-value]

    def match(self, media: bytes, source: pb.Source | None = None, include_sightings: bool = False
              ) -> pb.MatchResponse:
        return self._call("Match", pb.MatchRequest(media=media, source=source,  # type: ignore[return-value]
                                                   include_sightings=include_sightings))

    def match_stream(self, requests: Iterable[pb.StreamRequest], timeout_s: float | None = None
                     ) -> Iterator[pb.StreamResponse]:
        return self.stub.MatchStream(iter(requests), metadata=self.metadata, timeout=timeout_s or self.timeout_s)

    def forget_reference(self, reference_id: int, reason: str = "") -> pb.ForgetResponse:
        return self._call("ForgetReference", pb.ForgetReferenceRequest(  # type: ignore[return-value]
            reference_id=reference_id, reason=reason))

    def forget_case(self, case_id: str, reason: str = "") -> pb.ForgetResponse:
        return self._call("ForgetCase", pb.ForgetCaseRequest(case_id=case_id, reason=reason))  # type: ignore

    def configure_case(self, case_id: str, thresholds: pb.Thresholds) -> pb.Case:
        return self._call("ConfigureCase", pb.ConfigureCaseRequest(  # type: ignore[return-value]
            case_id=case_id, thresholds=thresholds))

    def record_identifiers(self, case_id: str, identifiers: list[tuple[str, str]]) -> int:
        """A victim's identifiers (kind, value) for a case, stored as keyed digests only; how many were new."""
        request = pb.RecordIdentifiersRequest(
            case_id=case_id, identifiers=[pb.Identifier(kind=kind, value=value) for kind, value in identifiers])
        return self._call("RecordIdentifiers", request).stored  # type: ignore[attr-defined]

    def mark_benign(self, media: bytes | None = None, sighting_id: int | None = None, note: str = "",
                    case_id: str = "") -> pb.MarkBenignResponse:
        """Into the negative bank of every case, or with case_id only of that case ("not this victim")."""
        request = pb.MarkBenignRequest(note=note, case_id=case_id)
        if media is not None:
            request.media = media
        else:
            request.sighting_id = sighting_id or 0
        return self._call("MarkBenign", request)  # type: ignore[return-value]

    def stats(self) -> pb.Stats:
        return self._call("GetStats", pb.GetStatsRequest())  # type: ignore[return-value]
