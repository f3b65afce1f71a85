"""Locust load test of jiwoom.v1.Matcher over gRPC: `Match` and crawler-style `MatchStream` with a realistic media mix.

    .venv/bin/locust -f bench/locustfile.py --headless -u 6 -r 1 -t 10m --host 127.0.0.1:50051 --csv /tmp/load

Run it from the repository root (locust puts the working directory on sys.path, and `bench.*` is imported from
there). `python -m bench.load_soak` runs it against a throwaway local service and samples the server's memory.

Users: `MatchUser` (weight 1) sends single `Match` calls, as the case system or an officer's console does;
`CrawlerUser` (weight 2) holds a `MatchStream` open for 10-30 items, paced like a crawler fetching media, at most
two items unanswered. Each open stream holds a gRPC thread of the service for its whole life (up to
`max_concurrent_rpcs`, 32 by default); media work runs in at most `max_workers` (8) calls at once, so idle streams
do not hold Match back.

Media: transformed corpus images (bench/transforms.py) at three sizes (thumbnails of 120-320 px, photos of 720-900
px, large images of 2800-3200 px) as JPEG, PNG and WEBP, short videos (4-5 s: a pan over a still, a cut and
re-encoded clip, a corpus clip) and a little junk (random bytes, a truncated JPEG, an HTML page) that the service
must refuse with INVALID_ARGUMENT (the refusal is a success; anything else a failure). Half of the media are
copies of the references, half unrelated corpus media. gRPC errors are locust failures named by status code.

Environment:
    JIWOOM_TOKEN               bearer token, role crawler or admin (Match and MatchStream); required
    JIWOOM_TLS_CA              PEM of the CA that signed the service's certificate; with it the channel uses TLS
                               (a grpcs://host:port --host uses TLS with the system's roots)
    JIWOOM_LOAD_REGISTER=1     register the references at start (case JIWOOM_LOAD_CASE, no retro-hunt) and forget
                               that case at the end (JIWOOM_LOAD_FORGET=0 keeps it); with JIWOOM_LOAD_REGISTER_TOKEN
                               (role case_system, officer or admin; default JIWOOM_TOKEN)
    JIWOOM_LOAD_CASE           the references' case id (load-test); copies count as found when they match it
    JIWOOM_LOAD_REFERENCES     corpus images registered (30), plus one corpus video
    JIWOOM_LOAD_POOL           distinct images sent (36: every size x format, copies and unrelated)
    JIWOOM_LOAD_SEED           picks the references and the transforms (0); the same seed gives the same media
    JIWOOM_LOAD_TIMEOUT_S      per-call deadline (120)
    JIWOOM_LOAD_WAIT_S         "low,high" seconds between a MatchUser's calls (3,9)
    JIWOOM_LOAD_PACE_S         "low,high" seconds between a stream's items (4,12)
    JIWOOM_LOAD_STREAM_ITEMS   "low,high" items per stream (10,30)
    JIWOOM_LOAD_SUMMARY        write how many copies were found (and unrelated media matched) to this JSON file
    JIWOOM_CORPUS              the benign dev corpus (default ../shared/corpus/dev)

Without JIWOOM_LOAD_REGISTER the references must already be registered with the same seed and count (or copies
are merely "not found": that changes the summary, not the failures). Every MatchStream item carries a source, so
the service records it as a sighting; the URLs are stable per pool item, so a long run re-crawls the same URLs
(the sighting is updated) instead of growing the store without end.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import gevent
import grpc
import grpc.experimental.gevent as grpc_gevent
import numpy as np
from locust import User, between, events, task
from locust.env import Environment
from locust.runners import MasterRunner, Runner, WorkerRunner
from PIL import Image

from bench.accuracy import transformed
from bench.service_latency import image_path, pick_images
from bench.transforms import CORPUS, TRANSFORMS, encode, load
from jiwoom.api.client import open_channel
from jiwoom.api.proto_gen.jiwoom.v1 import matcher_pb2 as pb
from jiwoom.api.proto_gen.jiwoom.v1 import matcher_pb2_grpc as pb_grpc
from tests.media_samples import encode_video

log = logging.getLogger("jiwoom.load")

REFERENCE_VIDEO = "videos/vid_002.mp4"  # 5.3 s, registered as a reference; cut and re-encoded copies are sent
UNRELATED_VIDEO = "videos/vid_004.mp4"  # 4 s, sent as it is (not registered; vid_005 is its twin, also not)
SIZES = {"thumb": (120, 320), "photo": (720, 900), "large": (2800, 3200)}  # long side in px
FORMATS = ("JPEG", "PNG", "WEBP")
EXPECT_REFUSAL = grpc.StatusCode.INVALID_ARGUMENT  # what junk must get
CODES = {code.value[0]: code for code in grpc.StatusCode}


def env_range(name: str, default: tuple[float, float]) -> tuple[float, float]:
    """(low, high) from "low,high" in the environment, to tune the load without editing this file."""
    low, high = (float(v) for v in os.environ.get(name, f"{default[0]},{default[1]}").split(","))
    return low, high


# Sized for the 2-core CPU box (Match takes 0.3-3 s there): busy, not queued without end. Faster machines take
# more users, or shorter waits through these variables.
MATCH_WAIT_S = env_range("JIWOOM_LOAD_WAIT_S", (3, 9))  # between one user's Match calls
STREAM_PACE_S = env_range("JIWOOM_LOAD_PACE_S", (4, 12))  # between a stream's items: the crawler fetching media
STREAM_ITEMS = env_range("JIWOOM_LOAD_STREAM_ITEMS", (10, 30))  # items per stream: a board page or two
STREAM_WINDOW = 2  # items unanswered at most per stream (the service answers a stream's items in order)
CRAWLER_MIX = {"thumb": 4, "photo": 4, "large": 1, "video": 1, "junk": 1}  # boards: mostly thumbnails and photos


@dataclass(frozen=True)
class Item:
    kind: str  # thumb, photo, large, video or junk
    data: bytes
    copy: bool  # a transformed copy of a registered reference: should match the load case
    label: str  # what it is, for the log
    url: str  # stable per item: sent again, it updates its sighting instead of adding one


@dataclass
class Plan:
    """What this process sends, and what it registers when asked to."""

    registered: list[int]  # corpus image indexes
    pool: dict[str, list[Item]]  # by kind


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


CASE = os.environ.get("JIWOOM_LOAD_CASE", "load-test")
TIMEOUT_S = float(os.environ.get("JIWOOM_LOAD_TIMEOUT_S", "120"))
PLAN: Plan | None = None
TALLY: Counter[str] = Counter()  # "<call> <kind> copies|copies_found|others|others_matched"
TALLY_LOCK = threading.Lock()


# -- media -----------------------------------------------------------------------------------------------------------


def scaled(image: Image.Image, long_side: int) -> Image.Image:
    factor = long_side / max(image.size)
    return image.resize((max(1, round(image.width * factor)), max(1, round(image.height * factor))), Image.LANCZOS)


def even(frame: np.ndarray) -> np.ndarray:
    """yuv420p needs even sides."""
    return frame[: frame.shape[0] // 2 * 2, : frame.shape[1] // 2 * 2]


def pan_video(image: Image.Image, seconds: float = 4.0, fps: int = 8) -> bytes:
    """A still re-uploaded as a video: a slow pan over 80 % of it, 480 px wide, H.264 in MP4."""
    frame = np.asarray(scaled(image, 600))
    height, width = round(frame.shape[0] * 0.8), round(frame.shape[1] * 0.8)
    count = round(seconds * fps)
    frames = []
    for n in range(count):
        left = round((frame.shape[1] - width) * n / max(1, count - 1))
        top = round((frame.shape[0] - height) * n / max(1, count - 1))
        frames.append(even(frame[top: top + height, left: left + width]))
    return encode_video(frames, "mp4", "libx264", fps)


def clip(path: Path, seconds: float, width: int, container: str, codec: str, fps: int = 12) -> bytes:
    """The first `seconds` of a corpus video, scaled to `width` and re-encoded (a cut re-upload)."""
    frames = []
    with av.open(str(path)) as source:
        stream = source.streams.video[0]
        step = 1.0 / fps
        next_at = 0.0
        for frame in source.decode(stream):
            at = float(frame.pts * stream.time_base) if frame.pts is not None else next_at
            if at >= seconds:
                break
            if at + 1e-6 >= next_at:
                image = frame.to_image()
                frames.append(even(np.asarray(image.resize((width, round(image.height * width / image.width))))))
                next_at += step
    return encode_video(frames, container, codec, fps)


def build_plan(registered: list[int], others: list[int], size: int, seed: int) -> Plan:
    """A pool of `size` images (alternately copies of `registered` and `others`, every size x format), four videos
    and three junk items. Seeded: every process of a run builds the same pool."""
    rng = random.Random(seed)
    size = max(size, 2 * len(SIZES))  # a copy and an unrelated image of every size at least
    # Every three consecutive combinations cover the sizes, every nine all size x format pairs.
    combos = [(kind, FORMATS[(k + r) % len(FORMATS)]) for r in range(len(FORMATS)) for k, kind in enumerate(SIZES)]
    pool: dict[str, list[Item]] = {kind: [] for kind in (*SIZES, "video", "junk")}
    for i in range(size):
        copy = i % 2 == 0
        index = rng.choice(registered) if copy else others[(i // 2) % len(others)]
        kind, fmt = combos[(i // 2) % len(combos)]
        transform = rng.choice(list(TRANSFORMS))
        image = scaled(transformed(transform, load(image_path(index)), seed + i), rng.randint(*SIZES[kind]))
        data = encode(image, fmt, rng.randint(70, 95))
        label = f"{image_path(index).stem} {transform} {fmt} {image.width}x{image.height}"
        pool[kind].append(Item(kind, data, copy, label, f"https://board.example/media/{seed}/{i}.{fmt.lower()}"))
    videos = [
        (True, "pan over a reference", pan_video(transformed("text_overlay", load(image_path(registered[0])), seed))),
        (True, "reference video cut, re-encoded", clip(CORPUS / REFERENCE_VIDEO, 3.0, 320, "mp4", "libx264")),
        (False, "pan over an unrelated image", pan_video(load(image_path(others[0])))),
        (False, "unrelated clip", (CORPUS / UNRELATED_VIDEO).read_bytes()),
    ]
    for n, (copy, label, data) in enumerate(videos):
        pool["video"].append(Item("video", data, copy, label, f"https://board.example/video/{seed}/{n}.mp4"))
    photo = encode(scaled(load(image_path(others[-1])), 800), "JPEG", 90)
    junk = [
        ("random bytes", random.Random(seed).randbytes(4096)),
        ("truncated JPEG", photo[: len(photo) // 2]),
        ("an HTML page", b"<!doctype html><html><head><title>404</title></head><body>Not found</body></html>"),
    ]
    for n, (label, data) in enumerate(junk):
        pool["junk"].append(Item("junk", data, False, label, f"https://board.example/junk/{seed}/{n}"))
    return Plan(registered, pool)


# -- the client ------------------------------------------------------------------------------------------------------


class GrpcFailure(Exception):
    """A failed call as locust records it: failures group by name and message, so the status code leads."""


def target_of(host: str | None) -> tuple[str, bool]:
    """host:port and whether to use TLS, from --host (host:port, grpc://host:port or grpcs://host:port)."""
    host = host or os.environ.get("JIWOOM_HOST", "127.0.0.1:50051")
    for scheme, tls in (("grpcs://", True), ("grpc://", False), ("https://", True), ("http://", False)):
        if host.startswith(scheme):
            return host[len(scheme):].rstrip("/"), tls
    return host.rstrip("/"), False


def channel_for(host: str | None) -> grpc.Channel:
    target, tls = target_of(host)
    ca = os.environ.get("JIWOOM_TLS_CA")
    return open_channel(target, tls_ca=Path(ca) if ca else None, tls=tls)


def token(name: str = "JIWOOM_TOKEN") -> str:
    value = os.environ.get(name) or (os.environ.get("JIWOOM_TOKEN") if name != "JIWOOM_TOKEN" else None)
    if not value:
        raise RuntimeError(f"set {name} to a bearer token (jiwoom token --role crawler --name load-test)")
    return value


def tally(call: str, item: Item, reply: pb.MatchResponse) -> None:
    matched = any(m.case_id == CASE for m in reply.matches)
    with TALLY_LOCK:
        if item.copy:
            TALLY[f"{call} {item.kind} copies"] += 1
            TALLY[f"{call} {item.kind} copies_found"] += matched
        else:
            TALLY[f"{call} {item.kind} others"] += 1
            TALLY[f"{call} {item.kind} others_matched"] += matched


class MatcherLoadClient:
    """The Matcher's calls, each reported to locust as a `grpc` request; gRPC errors become failures."""

    def __init__(self, environment: Environment, host: str | None) -> None:
        self.channel = channel_for(host)
        self.stub = pb_grpc.MatcherStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token()}"),)
        self.request = environment.events.request
        self.streams = 0

    def close(self) -> None:
        self.channel.close()

    def report(self, name: str, started: float, length: int = 0, exception: Exception | None = None) -> None:
        self.request.fire(request_type="grpc", name=name, response_time=(time.perf_counter() - started) * 1000,
                          response_length=length, exception=exception, context={})

    def outcome(self, name: str, started: float, item: Item, code: grpc.StatusCode, details: str) -> None:
        """Report a non-OK status: junk refused as expected is a success, anything else a failure."""
        if item.kind == "junk" and code == EXPECT_REFUSAL:
            self.report(name, started)
        else:
            self.report(name, started, exception=GrpcFailure(f"{code.name}: {details}"))

    def match(self, item: Item) -> None:
        name = f"Match {item.kind}"
        started = time.perf_counter()
        try:
            reply = self.stub.Match(pb.MatchRequest(media=item.data), metadata=self.metadata, timeout=TIMEOUT_S)
        except grpc.RpcError as error:
            code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
            details = error.details() if isinstance(error, grpc.Call) else str(error)
            self.outcome(name, started, item, code, details or "")
            return
        if item.kind == "junk":
            self.report(name, started, exception=GrpcFailure(f"OK: {item.label} was accepted"))
            return
        self.report(name, started, reply.ByteSize())
        tally("Match", item, reply)

    def match_stream(self, items: list[Item]) -> None:
        """One crawler stream: items sent as they are "found", answers read as they come, each item reported
        with the time from being sent to its answer. A broken stream fails its unanswered items."""
        self.streams += 1
        prefix = f"{id(self):x}-{self.streams}"
        with TALLY_LOCK:  # streams are not locust requests: their minutes-long lives would swamp the percentiles
            TALLY["MatchStream streams"] += 1
        sent: dict[str, tuple[float, Item]] = {}
        slots = threading.Semaphore(STREAM_WINDOW)  # gevent's, under locust's monkey patching
        closed = threading.Event()

        def requests() -> Iterator[pb.StreamRequest]:
            for n, item in enumerate(items):
                while not slots.acquire(timeout=1.0):
                    if closed.is_set():
                        return
                if closed.is_set():
                    return
                item_id = f"{prefix}-{n}"
                source = pb.Source(url=item.url, page_url=f"https://board.example/thread/{n}", site="board.example",
                                   title="load test")
                sent[item_id] = (time.perf_counter(), item)
                yield pb.StreamRequest(item_id=item_id, media=pb.StreamMedia(data=item.data, source=source))
                time.sleep(random.uniform(*STREAM_PACE_S))

        deadline = len(items) * (STREAM_PACE_S[1] + TIMEOUT_S)
        stream_started = time.perf_counter()
        call = self.stub.MatchStream(requests(), metadata=self.metadata, timeout=deadline)
        try:
            for response in call:
                entry = sent.pop(response.item_id, None)
                slots.release()
                if entry is None:
                    self.report("MatchStream", stream_started,
                                exception=GrpcFailure(f"answer for an unknown item {response.item_id!r}"))
                    continue
                started, item = entry
                name = f"MatchStream {item.kind}"
                if response.error_code:
                    code = CODES.get(response.error_code, grpc.StatusCode.UNKNOWN)
                    self.outcome(name, started, item, code, response.error_message)
                elif item.kind == "junk":
                    self.report(name, started, exception=GrpcFailure(f"OK: {item.label} was accepted"))
                else:
                    self.report(name, started, response.ByteSize())
                    tally("MatchStream", item, response.result)
            unanswered = "no answer before the stream ended"
        except grpc.RpcError as error:
            code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
            unanswered = f"{code.name}: stream broke: {error.details() if isinstance(error, grpc.Call) else error}"
            self.report("MatchStream", stream_started, exception=GrpcFailure(unanswered))
        finally:
            closed.set()
            call.cancel()  # a no-op after a clean end; stops the stream when locust stops this user mid-way
        for started, item in sent.values():  # sent and never answered: lost with the stream
            self.report(f"MatchStream {item.kind}", started, exception=GrpcFailure(unanswered))


# -- users -----------------------------------------------------------------------------------------------------------


def pick(kind: str) -> Item:
    assert PLAN is not None, "the media pool is built when locust starts (events.init)"
    return random.choice(PLAN.pool[kind])


class JiwoomUser(User):
    abstract = True

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.client = MatcherLoadClient(environment, self.host or environment.host)

    def on_stop(self) -> None:
        self.client.close()


class MatchUser(JiwoomUser):
    """Single Match calls (case system, officers' console): mostly photos, some thumbnails, large images,
    videos, and a little junk."""

    weight = 1
    wait_time = between(*MATCH_WAIT_S)

    @task(5)
    def photo(self) -> None:
        self.client.match(pick("photo"))

    @task(3)
    def thumbnail(self) -> None:
        self.client.match(pick("thumb"))

    @task(2)
    def large(self) -> None:
        self.client.match(pick("large"))

    @task(1)
    def video(self) -> None:
        self.client.match(pick("video"))

    @task(1)
    def junk(self) -> None:
        self.client.match(pick("junk"))


class CrawlerUser(JiwoomUser):
    """A crawler's MatchStream: boards are mostly thumbnails and photos, some large images and videos."""

    weight = 2
    wait_time = between(1, 3)  # before the next stream: the next board

    @task
    def stream(self) -> None:
        count = random.randint(int(STREAM_ITEMS[0]), int(STREAM_ITEMS[1]))
        kinds = random.choices(list(CRAWLER_MIX), weights=list(CRAWLER_MIX.values()), k=count)
        self.client.match_stream([pick(kind) for kind in kinds])


# -- start and end ---------------------------------------------------------------------------------------------------


def registering() -> bool:
    return os.environ.get("JIWOOM_LOAD_REGISTER", "0") == "1"


@events.init.add_listener
def on_init(environment: Environment, runner: Runner | None = None, **_: object) -> None:
    global PLAN
    token()  # fail now, not once per user
    registered, others = pick_images(env_int("JIWOOM_LOAD_REFERENCES", 30), env_int("JIWOOM_LOAD_POOL", 36) // 2,
                                     env_int("JIWOOM_LOAD_SEED", 0))
    if registering() and not isinstance(runner, WorkerRunner):
        registered = register(environment, registered)
    if isinstance(runner, MasterRunner):  # the master only coordinates; its workers send
        return
    started = time.perf_counter()
    PLAN = build_plan(registered, others, env_int("JIWOOM_LOAD_POOL", 36), env_int("JIWOOM_LOAD_SEED", 0))
    sizes = ", ".join(f"{len(v)} {k}" for k, v in PLAN.pool.items())
    log.info("media pool: %s (%.1f s)", sizes, time.perf_counter() - started)
    # Building the pool held the event loop for seconds; its cached clock would make --run-time end that early.
    gevent.get_hub().loop.update_now()


def register(environment: Environment, registered: list[int]) -> list[int]:
    """Register the references before any user starts (init runs before the run time counts); the images the
    service accepted. A few corpus images are too flat to match anything (the service refuses them): copies are
    made of the others only."""
    started = time.perf_counter()
    channel = channel_for(environment.host)
    stub = pb_grpc.MatcherStub(channel)
    metadata = (("authorization", f"Bearer {token('JIWOOM_LOAD_REGISTER_TOKEN')}"),)
    media = [(index, image_path(index)) for index in registered] + [(-1, CORPUS / REFERENCE_VIDEO)]
    accepted = []
    try:
        for index, path in media:
            request = pb.RegisterReferenceRequest(case_id=CASE, media=path.read_bytes(), skip_retro_hunt=True)
            try:
                stub.RegisterReference(request, metadata=metadata, timeout=300)
            except grpc.RpcError as error:
                if not (isinstance(error, grpc.Call) and error.code() == grpc.StatusCode.INVALID_ARGUMENT):
                    raise RuntimeError(f"registering the references failed: {error}") from error
                log.info("reference %s refused: %s", path.name, error.details())
                continue
            accepted.append(index)
    finally:
        channel.close()
    log.info("registered %d references in case %r (%.1f s)", len(accepted), CASE, time.perf_counter() - started)
    return [index for index in accepted if index >= 0]


@events.quitting.add_listener
def on_quitting(environment: Environment, **_: object) -> None:
    if not isinstance(environment.runner, MasterRunner):
        summary = {"case": CASE, "tally": dict(sorted(TALLY.items()))}
        log.info("copies found: %s", summary)
        if path := os.environ.get("JIWOOM_LOAD_SUMMARY"):
            Path(path).write_text(json.dumps(summary, indent=2) + "\n")
    if registering() and os.environ.get("JIWOOM_LOAD_FORGET", "1") == "1" \
            and not isinstance(environment.runner, WorkerRunner):
        channel = channel_for(environment.host)
        metadata = (("authorization", f"Bearer {token('JIWOOM_LOAD_REGISTER_TOKEN')}"),)
        try:
            reply = pb_grpc.MatcherStub(channel).ForgetCase(
                pb.ForgetCaseRequest(case_id=CASE, reason="load test finished"), metadata=metadata, timeout=60)
            log.info("forgot case %r: %d references", CASE, reply.references_forgotten)
        except grpc.RpcError as error:
            log.warning("could not forget case %r: %s", CASE, error)
        finally:
            channel.close()


grpc_gevent.init_gevent()  # before any channel opens: gRPC's blocking calls then yield to the other users
