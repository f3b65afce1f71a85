"""The matching service end to end: a real gRPC server on loopback, real PostgreSQL, real models.

One server for the module (models load once); each test uses its own case ids so tests stay independent.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import grpc
import numpy as np
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image

from bench import transforms
from jiwoom.api.client import MatcherClient, open_channel
from jiwoom.api.errors import InferenceUnavailable
from jiwoom.api.proto_gen.jiwoom.v1 import matcher_pb2 as pb
from server.app import Running, running_service
from server.config import ServiceSettings, Settings
from server.service import MatchingService
from server.storage.store import ROLES, Principal
from tests.conftest import ASTRONAUT, fresh_database

REFERENCES = ["img_0010.jpg", "img_0050.jpg", "img_0100.jpg", ASTRONAUT]
DISTRACTORS = ["img_0020.jpg", "img_0060.jpg", "img_0120.jpg", "img_0180.jpg", "img_0220.jpg", "img_0265.jpg"]
COPY_TRANSFORMS = ["resize", "jpeg_q30", "crop_80", "text_overlay", "flip", "grayscale", "paste_25"]


@dataclass
class Served:
    running: Running
    channel: grpc.Channel
    tokens: dict[str, str]

    def client(self, role: str = "admin") -> MatcherClient:
        return MatcherClient(self.channel, self.tokens[role])


@pytest.fixture(scope="module")
def served(postgres_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data_dir = tmp_path_factory.mktemp("service")
    settings = Settings(service=ServiceSettings(listen="127.0.0.1:0", data_dir=str(data_dir), max_workers=4))
    with fresh_database(postgres_server) as url, running_service(settings, url) as running:
        tokens = {role: running.store.create_token(f"test-{role}", role) for role in ROLES}
        channel = open_channel(f"127.0.0.1:{running.port}")
        yield Served(running, channel, tokens)
        channel.close()


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    return transforms.encode(image, "JPEG", quality)


def image(corpus: Path, name: str) -> Image.Image:
    return transforms.load(corpus / "images" / name)


def reference_hits(response: pb.MatchResponse) -> dict[int, set[str]]:
    hits: dict[int, set[str]] = {}
    for match in response.matches:
        if match.target == pb.TARGET_REFERENCE:
            hits.setdefault(match.reference_id, set()).add(pb.Signal.Name(match.signal))
    return hits


@pytest.fixture(scope="module")
def registered(served: Served, corpus: Path) -> dict[str, int]:
    client = served.client("case_system")
    ids = {}
    for name in REFERENCES:
        reply = client.register_reference("case-copies", (corpus / "images" / name).read_bytes())
        assert reply.created and reply.reference_id > 0
        ids[name] = reply.reference_id
    return ids


@pytest.mark.parametrize("transform", COPY_TRANSFORMS)
def test_transformed_copies_match_the_right_reference(served: Served, corpus: Path, registered: dict[str, int],
                                                      transform: str) -> None:
    client = served.client("crawler")
    for name, reference_id in registered.items():
        query = transforms.TRANSFORMS[transform](image(corpus, name))
        hits = reference_hits(client.match(jpeg(query)))
        assert reference_id in hits, f"{transform} of {name} missed; got {hits}"
        assert set(hits) == {reference_id}, f"{transform} of {name} also matched {set(hits) - {reference_id}}"


def test_other_corpus_images_do_not_match(served: Served, corpus: Path, registered: dict[str, int]) -> None:
    client = served.client("crawler")
    for name in DISTRACTORS:
        response = client.match((corpus / "images" / name).read_bytes())
        assert reference_hits(response) == {}, f"{name} matched {reference_hits(response)}"


def test_match_reports_signal_score_threshold_and_face_ages(served: Served, corpus: Path,
                                                            registered: dict[str, int]) -> None:
    response = served.client("crawler").match(jpeg(transforms.resize(image(corpus, ASTRONAUT))))
    by_signal = {m.signal_name: m for m in response.matches if m.reference_id == registered[ASTRONAUT]}
    assert {"pdq", "embedding", "face_sface"} <= set(by_signal)  # SFace: the default face model
    pdq = by_signal["pdq"]
    assert pdq.signal == pb.SIGNAL_PDQ and pdq.score <= pdq.threshold == 31 and pdq.case_id == "case-copies"
    embedding = by_signal["embedding"]
    assert embedding.signal == pb.SIGNAL_EMBEDDING and embedding.score >= embedding.threshold > 0.3
    face = by_signal["face_sface"]
    assert face.signal == pb.SIGNAL_UNSPECIFIED and face.score >= face.threshold > 0.3  # a cosine
    ages = [f.age_mean for f in face.faces]
    assert ages and all(20 < age < 60 for age in ages), ages  # the astronaut is about 40
    assert not face.under_19 and not response.youth_faces


def test_matches_carry_a_calibrated_confidence_through_grpc_and_into_the_database(
        served: Served, corpus: Path, registered: dict[str, int]) -> None:
    assert served.running.service.calibration is not None  # the packaged calibration fits the default model
    name = REFERENCES[0]
    crawled = jpeg(transforms.TRANSFORMS["crop_80"](image(corpus, name)))
    source = pb.Source(url="https://board.example/media/confidence.jpg", site="board.example")
    response = served.client("crawler").match(crawled, source=source)
    matches = [m for m in response.matches if m.reference_id == registered[name]]
    assert matches and all(m.HasField("confidence") for m in matches)
    assert min(m.confidence.p_false for m in matches) < 0.01
    for m in matches:
        assert 0.0 <= m.confidence.p_false <= 1.0 and m.confidence.expected_false_matches >= 0.0
        assert m.confidence.verification in (pb.VERIFICATION_NOT_NEEDED, pb.VERIFICATION_VERIFIED)
        assert not m.confidence.face_only
    embedding = next(m for m in matches if m.signal == pb.SIGNAL_EMBEDDING)
    assert embedding.confidence.normalised_score < embedding.score  # the background level was taken off
    with psycopg.connect(served.running.database_url) as conn:
        stored = conn.execute("select p_false, verification, face_only from matches where sighting_id = %s",
                              (response.sighting_id,)).fetchall()
        keypoints = conn.execute("select count(*) from reference_local_features where reference_id = %s",
                                 (registered[name],)).fetchone()[0]
    assert sorted(round(p, 6) for p, _, _ in stored) == sorted(round(m.confidence.p_false, 6) for m in matches)
    assert keypoints == 1  # one image: one frame of keypoints kept for verification


def encode_clip(path: Path, start_s: float, end_s: float, scale: float) -> bytes:
    """Cut [start, end) from a video, scale it and re-encode it as H.264 in MP4, as a re-uploader would."""
    out = io.BytesIO()
    with av.open(str(path)) as source, av.open(out, "w", format="mp4") as target:
        stream_in = source.streams.video[0]
        width, height = (round(stream_in.width * scale / 2) * 2, round(stream_in.height * scale / 2) * 2)
        stream_out = target.add_stream("libx264", rate=15)
        stream_out.width, stream_out.height, stream_out.pix_fmt = width, height, "yuv420p"
        stream_out.options = {"crf": "30", "preset": "veryfast"}
        for frame in source.decode(stream_in):
            t = float(frame.pts * stream_in.time_base)
            if start_s <= t < end_s:
                rgb = frame.to_image().resize((width, height))
                new = av.VideoFrame.from_image(rgb)
                for packet in stream_out.encode(new):
                    target.mux(packet)
        for packet in stream_out.encode():
            target.mux(packet)
    return out.getvalue()


def test_clip_cut_from_a_reference_video_matches_with_segment_times(served: Served, corpus: Path) -> None:
    video = corpus / "videos" / "vid_000.mp4"  # 30 s
    reply = served.client("case_system").register_reference("case-video", video.read_bytes())
    assert reply.media.kind == "video" and reply.media.frames >= 25
    clip = encode_clip(video, 12.0, 20.0, scale=0.7)
    response = served.client("crawler").match(clip)
    segments = [m for m in response.matches if m.reference_id == reply.reference_id]
    assert segments, "the clip did not match its source video"
    best = max(segments, key=lambda m: m.matched_frames)
    assert best.matched_frames >= 4
    assert abs(best.target_segment.start_s - 12.0) <= 2.0 and abs(best.target_segment.end_s - 20.0) <= 2.0, best
    assert abs(best.query_segment.start_s - 0.0) <= 2.0 and abs(best.query_segment.end_s - 8.0) <= 2.0, best


def test_hash_only_reference_matches_its_image(served: Served, corpus: Path) -> None:
    # A victim hashes on their own device with the same PDQ as ThreatExchange/StopNCII: here pdqhash directly.
    import pdqhash

    from server.models.pdq import hash_to_hex, pack_bits

    photo = np.asarray(image(corpus, "img_0150.jpg"))
    bits, quality = pdqhash.compute(photo)
    assert quality >= 50
    reply = served.client("case_system").register_reference("case-hashes", pdq_hashes=[hash_to_hex(pack_bits(bits))])
    assert reply.media.kind == "hashes" and reply.created
    response = served.client("crawler").match(jpeg(transforms.resize(image(corpus, "img_0150.jpg"), 0.6), 70))
    hits = reference_hits(response)
    assert hits.get(reply.reference_id) == {"SIGNAL_PDQ"}


def test_retro_hunt_finds_earlier_sightings(served: Served, corpus: Path) -> None:
    crawled = jpeg(transforms.text_overlay(image(corpus, "img_0070.jpg")), 60)
    source = pb.Source(url="https://board.example/media/77.jpg", page_url="https://board.example/post/77",
                       site="board.example", title="leaked", author="uploader1")
    seen = served.client("crawler").match(crawled, source=source)
    assert seen.sighting_id > 0 and not reference_hits(seen)
    reply = served.client("case_system").register_reference("case-retro",
                                                            (corpus / "images" / "img_0070.jpg").read_bytes())
    sightings = [m for m in reply.matches if m.target == pb.TARGET_SIGHTING]
    assert [m.sighting_id for m in sightings] == [seen.sighting_id] * len(sightings) and sightings
    assert sightings[0].sighting_source.page_url == "https://board.example/post/77"
    with psycopg.connect(served.running.database_url) as conn:
        stored = conn.execute("select count(*) from matches where reference_id = %s and sighting_id = %s"
                              " and found_by = 'retro_hunt'", (reply.reference_id, seen.sighting_id)).fetchone()[0]
    assert stored >= 1
    # Registering the same bytes again is idempotent
    again = served.client("case_system").register_reference("case-retro",
                                                            (corpus / "images" / "img_0070.jpg").read_bytes())
    assert again.reference_id == reply.reference_id and not again.created


def test_forget_removes_every_trace(served: Served, corpus: Path) -> None:
    admin = served.client("officer")
    photo = image(corpus, "img_0130.jpg")
    reply = admin.register_reference("case-forget", jpeg(photo))
    reference_id = reply.reference_id
    crawled = served.client("crawler").match(jpeg(transforms.crop(photo)), source=pb.Source(url="https://x.example/1"))
    assert reference_id in reference_hits(crawled)
    with psycopg.connect(served.running.database_url) as conn:
        vectors = conn.execute("select vectors from reference_vectors where reference_id = %s and signal = 'embedding'",
                               (reference_id,)).fetchone()[0]
    forgotten = admin.forget_reference(reference_id, reason="victim withdrew")
    assert forgotten.references_forgotten == 1 and forgotten.matches_deleted >= 1
    assert reference_id not in reference_hits(served.client("crawler").match(jpeg(photo)))
    with psycopg.connect(served.running.database_url) as conn:
        for table in ("reference_media where id", "reference_vectors where reference_id",
                      "matches where reference_id", "matches where other_reference_id"):
            assert conn.execute(f"select count(*) from {table} = %s", (reference_id,)).fetchone()[0] == 0, table
        target, detail = conn.execute(
            "select target, detail::text from audit_log where action = 'ForgetReference' order by id desc"
        ).fetchone()
    assert target == f"reference:{reference_id}" and "victim withdrew" in detail
    # The index snapshot on disk no longer holds the embedding (a row's first 64 bytes are distinctive)
    snapshots = Path(served.running.service.snapshot_dir or "")
    needle = bytes(vectors[:64])
    assert all(needle not in f.read_bytes() for f in snapshots.glob("references-*"))
    assert served.running.service.libraries["references"].owners().isdisjoint({reference_id})
    with pytest.raises(grpc.RpcError) as error:
        admin.forget_reference(reference_id)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_forget_case_removes_all_its_references(served: Served, corpus: Path) -> None:
    client = served.client("case_system")
    ids = [client.register_reference("case-gone", jpeg(image(corpus, n)), skip_retro_hunt=True).reference_id
           for n in ("img_0140.jpg", "img_0160.jpg")]
    reply = client.forget_case("case-gone", reason="case closed")
    assert reply.references_forgotten == 2
    owners = served.running.service.libraries["references"].owners()
    assert owners.isdisjoint(ids)
    with psycopg.connect(served.running.database_url) as conn:
        assert conn.execute("select count(*) from cases where id = 'case-gone'").fetchone()[0] == 0


def test_tokens_and_roles_are_enforced(served: Served, corpus: Path) -> None:
    stub_request = pb.GetStatsRequest()
    bare = MatcherClient(served.channel, "")
    bare.metadata = ()
    for client, code in ((bare, grpc.StatusCode.UNAUTHENTICATED),
                         (MatcherClient(served.channel, "jw_not-a-real-token"), grpc.StatusCode.UNAUTHENTICATED)):
        with pytest.raises(grpc.RpcError) as error:
            client.stub.GetStats(stub_request, metadata=client.metadata, timeout=10)
        assert error.value.code() == code
    with pytest.raises(grpc.RpcError) as error:
        served.client("crawler").forget_case("case-copies")
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as error:
        served.client("crawler").register_reference("case-x", jpeg(image(corpus, "img_0010.jpg")))
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert served.client("crawler").stats().references >= 0
    # Health and reflection answer without a token
    health = health_pb2_grpc.HealthStub(served.channel).Check(
        health_pb2.HealthCheckRequest(service="jiwoom.v1.Matcher"), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(served.channel)
    answer = next(reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                  timeout=10))
    assert "jiwoom.v1.Matcher" in {s.name for s in answer.list_services_response.service}


@pytest.mark.parametrize(("payload", "code", "text"), [
    (b"", grpc.StatusCode.INVALID_ARGUMENT, "empty"),
    (b"this is not an image at all" * 10, grpc.StatusCode.INVALID_ARGUMENT, "UnsupportedMedia"),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 400, grpc.StatusCode.INVALID_ARGUMENT, ""),
])
def test_bad_media_gets_a_clear_status(served: Served, payload: bytes, code: grpc.StatusCode, text: str) -> None:
    with pytest.raises(grpc.RpcError) as error:
        served.client("crawler").match(payload)
    assert error.value.code() == code
    assert text.lower() in (error.value.details() or "").lower()


def test_bad_requests_get_a_clear_status(served: Served, corpus: Path) -> None:
    client = served.client("admin")
    cases = [
        (lambda: client.register_reference("", jpeg(image(corpus, "img_0010.jpg"))), "case_id"),
        (lambda: client.register_reference("c", pdq_hashes=["abc"]), "PDQ"),
        (lambda: client.register_reference("c"), "PDQ hashes"),
        (lambda: client.forget_reference(987654321), "no reference"),
        (lambda: client.forget_case(""), "case_id is required"),
        (lambda: client.configure_case("c", pb.Thresholds(by_signal={"pdq": 3.0}, pdq_max_distance=4)), "disagree"),
        (lambda: client.configure_case("c", pb.Thresholds(pdq_max_distance=200)), "pdq_max_distance"),
        (lambda: client.mark_benign(sighting_id=987654321), "no sighting"),
    ]
    for call, text in cases:
        with pytest.raises(grpc.RpcError) as error:
            call()
        assert error.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
        assert text.lower() in (error.value.details() or "").lower(), error.value.details()
    big = open_channel(f"127.0.0.1:{served.running.port}", max_message_bytes=80 * 1024 * 1024)
    with pytest.raises(grpc.RpcError) as error:
        MatcherClient(big, served.tokens["crawler"]).match(b"\x00" * (65 * 1024 * 1024))
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    big.close()


def test_match_stream_items_frames_and_errors(served: Served, corpus: Path) -> None:
    video = corpus / "videos" / "vid_003.mp4"  # 10 s
    reply = served.client("case_system").register_reference("case-stream", video.read_bytes(), skip_retro_hunt=True)
    frames = []
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            t = float(frame.pts * stream.time_base)
            if 3.0 <= t < 8.0 and (not frames or t - 3.0 - frames[-1][1] >= 1.0):  # 1 frame/s, as crawlers sample
                frames.append((jpeg(frame.to_image(), 80), t - 3.0))
    source = pb.Source(url="https://tube.example/v/9", page_url="https://tube.example/watch/9")

    def requests() -> Iterator[pb.StreamRequest]:
        yield pb.StreamRequest(item_id="bad", media=pb.StreamMedia(data=b"garbage" * 20, source=source))
        for data, t in frames:
            yield pb.StreamRequest(item_id="frames", frame=pb.StreamFrame(image=data, timestamp_s=t))
        yield pb.StreamRequest(item_id="frames", end=pb.StreamEnd(source=source))
        yield pb.StreamRequest(item_id="photo", media=pb.StreamMedia(
            data=jpeg(image(corpus, "img_0010.jpg")), source=pb.Source(url="https://b.example/p.jpg")))
        yield pb.StreamRequest(item_id="no-source", media=pb.StreamMedia(data=jpeg(image(corpus, "img_0010.jpg"))))
        yield pb.StreamRequest(item_id="dangling", frame=pb.StreamFrame(image=frames[0][0], timestamp_s=0))

    assert len(frames) == 5
    results = {r.item_id: r for r in served.client("crawler").match_stream(requests())}
    assert results["bad"].error_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert results["no-source"].error_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert results["dangling"].error_code != 0
    streamed = results["frames"]
    assert streamed.error_code == 0 and streamed.result.sighting_id > 0
    hits = [m for m in streamed.result.matches if m.reference_id == reply.reference_id]
    assert hits, streamed
    best = max(hits, key=lambda m: m.matched_frames)
    assert abs(best.target_segment.start_s - 3.0) <= 2.0 and abs(best.target_segment.end_s - 7.0) <= 2.0
    assert results["photo"].error_code == 0 and results["photo"].result.sighting_id > 0


def test_match_stream_bounds_open_items_and_answers_each_item_once(served: Served, corpus: Path) -> None:
    limit = served.running.service.settings.service.stream_max_open_items
    small = jpeg(transforms.resize(image(corpus, "img_0030.jpg"), 0.25))
    ids = [f"item-{i}" for i in range(limit + 1)]

    def requests() -> Iterator[pb.StreamRequest]:
        for item_id in ids:  # every item opened before any ends: one too many
            yield pb.StreamRequest(item_id=item_id, frame=pb.StreamFrame(image=small, timestamp_s=0))
        for item_id in ids:
            yield pb.StreamRequest(item_id=item_id, frame=pb.StreamFrame(image=small, timestamp_s=1))
            yield pb.StreamRequest(item_id=item_id, end=pb.StreamEnd(source=pb.Source(url=f"https://s.example/{item_id}")))

    results = list(served.client("crawler").match_stream(requests()))
    assert sorted(r.item_id for r in results) == sorted(ids)  # exactly one answer per item
    refused = [r for r in results if r.error_code]
    assert [r.item_id for r in refused] == [ids[-1]]
    assert refused[0].error_code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert all(r.result.media.frames == 2 for r in results if not r.error_code)


def test_negative_bank_suppresses_known_benign_media(served: Served, corpus: Path) -> None:
    client = served.client("officer")
    photo = image(corpus, "img_0090.jpg")
    client.register_reference("case-benign", jpeg(photo), skip_retro_hunt=True)
    lookalike = jpeg(transforms.colour(photo))
    crawled = served.client("crawler").match(lookalike, source=pb.Source(url="https://c.example/ok.jpg"))
    assert reference_hits(crawled)
    client.mark_benign(sighting_id=crawled.sighting_id, note="officer: wallpaper, not the victim")
    again = served.client("crawler").match(lookalike)
    assert again.benign and not reference_hits(again)
    # Unrelated copies of other references still match
    assert reference_hits(served.client("crawler").match(jpeg(image(corpus, "img_0010.jpg"))))


def test_rejecting_a_match_for_one_case_keeps_it_for_other_cases(served: Served, corpus: Path) -> None:
    officer, crawler = served.client("officer"), served.client("crawler")
    photo = image(corpus, "img_0200.jpg")  # one victim's photo, reported in two cases
    a = officer.register_reference("case-reject-a", jpeg(photo), skip_retro_hunt=True).reference_id
    b = officer.register_reference("case-reject-b", jpeg(photo), skip_retro_hunt=True).reference_id
    copy = jpeg(transforms.colour(photo))
    crawled = crawler.match(copy, source=pb.Source(url="https://r.example/copy.jpg"))
    assert {a, b} <= set(reference_hits(crawled))
    officer.mark_benign(sighting_id=crawled.sighting_id, case_id="case-reject-a", note="officer: not this victim")
    again = crawler.match(copy, include_sightings=True)
    hits = reference_hits(again)
    assert again.benign and b in hits and a not in hits
    # Sightings belong to no case: only the bank of every case applies to them
    assert crawled.sighting_id in {m.sighting_id for m in again.matches if m.target == pb.TARGET_SIGHTING}
    with psycopg.connect(served.running.database_url) as conn:
        bank = [r[0] for r in conn.execute("select id from benign_media where case_id = 'case-reject-a'")]
        detail = conn.execute("select detail->>'case' from audit_log where action = 'MarkBenign' and target = %s",
                              (f"benign:{bank[0]}",)).fetchone()[0]
    assert len(bank) == 1 and detail == "case-reject-a"

    # A new reference of case A does not find the rejected sighting again; one of another case does
    def retro_hunt(case_id: str, scale: float) -> set[int]:
        reply = officer.register_reference(case_id, jpeg(transforms.resize(photo, scale)))
        assert reply.created
        return {m.sighting_id for m in reply.matches if m.target == pb.TARGET_SIGHTING}

    assert crawled.sighting_id not in retro_hunt("case-reject-a", 0.5)
    assert crawled.sighting_id in retro_hunt("case-reject-c", 0.6)

    # A restarted service rebuilds which case each bank entry belongs to from the database
    restarted = MatchingService(served.running.service.settings, served.running.service.inference,
                                served.running.store, snapshot_dir=None)
    restarted.start()
    owners = {m.reference_id for m in restarted.match(Principal("test", "crawler"), copy).matches}
    restarted.stop()
    assert b in owners and a not in owners

    # Forgetting case A forgets its negative bank too; case B still matches, and nothing is suppressed now
    officer.forget_case("case-reject-a", reason="case closed")
    with psycopg.connect(served.running.database_url) as conn:
        assert conn.execute("select count(*) from benign_media where id = any(%s)", (bank,)).fetchone()[0] == 0
        assert conn.execute("select count(*) from benign_vectors where benign_id = any(%s)",
                            (bank,)).fetchone()[0] == 0
    assert served.running.service.libraries["benign"].owners().isdisjoint(bank)
    after = crawler.match(copy)
    assert not after.benign and b in reference_hits(after)
    with pytest.raises(grpc.RpcError) as error:
        officer.mark_benign(sighting_id=crawled.sighting_id, case_id="case-reject-a")
    assert error.value.code() == grpc.StatusCode.NOT_FOUND and "no case" in (error.value.details() or "")

    # Benign for every case (no case id) suppresses the copy for every case
    officer.mark_benign(sighting_id=crawled.sighting_id, note="officer: a stock photo")
    final = crawler.match(copy)
    assert final.benign and not reference_hits(final)


def test_case_thresholds_apply_per_case(served: Served, corpus: Path) -> None:
    client = served.client("officer")
    photo = image(corpus, "img_0110.jpg")
    reply = client.register_reference("case-strict", jpeg(photo), skip_retro_hunt=True)
    cropped = jpeg(transforms.crop(photo, 0.6))
    before = reference_hits(served.client("crawler").match(cropped)).get(reply.reference_id, set())
    assert "SIGNAL_EMBEDDING" in before
    case = client.configure_case("case-strict", pb.Thresholds(embedding_min_similarity=0.999))
    assert abs(case.thresholds.embedding_min_similarity - 0.999) < 1e-6 and case.thresholds.pdq_max_distance == 31
    after = reference_hits(served.client("crawler").match(cropped)).get(reply.reference_id, set())
    assert "SIGNAL_EMBEDDING" not in after


def test_stats_count_what_is_stored(served: Served, registered: dict[str, int]) -> None:
    stats = served.client("officer").stats()
    assert stats.references >= len(registered) and stats.cases >= 1
    assert {(i.collection, i.signal_name) for i in stats.indexes} >= {
        ("references", "pdq"), ("references", "embedding"), ("sightings", "face_sface")}
    assert all(i.device == "cpu" for i in stats.indexes)
    assert stats.inference == "inprocess"


def test_idle_streams_do_not_starve_match(served: Served, corpus: Path) -> None:
    """Crawlers keep MatchStreams open between items; more of them than media workers must not block Match."""
    streams = served.running.service.settings.service.max_workers + 2
    release = threading.Event()

    def idle() -> Iterator[pb.StreamRequest]:
        release.wait(60)
        yield from ()

    def hold() -> None:
        list(served.client("crawler").match_stream(idle(), timeout_s=90))

    threads = [threading.Thread(target=hold) for _ in range(streams)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)  # every stream is open on the server and holds a gRPC thread
        client = MatcherClient(served.channel, served.tokens["crawler"], timeout_s=30)
        started = time.monotonic()
        reply = client.match(jpeg(image(corpus, "img_0020.jpg")))
        assert reply.media.kind and time.monotonic() - started < 30
    finally:
        release.set()
        for thread in threads:
            thread.join(timeout=30)


def test_stop_drains_media_work_then_refuses_new_work(served: Served) -> None:
    """Shutdown lets calls in flight finish before the pool closes, and turns waiting and new calls away."""
    running = served.running.service
    service = MatchingService(Settings(service=ServiceSettings(max_workers=1)), running.inference, running.store,
                              snapshot_dir=None)
    entered, outcome = threading.Event(), {}

    def in_flight() -> None:
        with service.slots.hold(None):
            entered.set()
            time.sleep(1.0)
            outcome["in_flight"] = "finished"

    def waiting() -> None:
        try:
            with service.slots.hold(None):  # no deadline: only stop() can end this wait
                outcome["waiting"] = "ran"
        except InferenceUnavailable as error:
            outcome["waiting"] = str(error)

    first, second = threading.Thread(target=in_flight), threading.Thread(target=waiting)
    first.start()
    entered.wait(10)
    second.start()
    time.sleep(0.2)
    started = time.monotonic()
    service.stop()
    assert outcome["in_flight"] == "finished" and time.monotonic() - started >= 0.5
    second.join(timeout=5)
    assert not second.is_alive() and outcome["waiting"] == "the service is stopping"
    with pytest.raises(InferenceUnavailable), service.slots.hold(time.monotonic() + 60):
        pass
