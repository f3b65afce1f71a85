"""The audio signal (issue 16): a copy that keeps the victim's sound is found by it, whatever its picture; other
sound, and a jingle shared by many unrelated videos, are not. Real parts: PyAV-encoded MP4s with AAC tracks,
libchromaprint, the real service over gRPC and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
from PIL import Image, ImageDraw

from jiwoom.api.proto_gen.jiwoom.v1 import matcher_pb2 as pb
from server.config import MatchSettings
from server.index.audio import AudioIndex
from server.inference import Inference
from server.signals import SIGNALS
from tests.conftest import Served, serving
from tests.media_samples import encode_video_with_sound, synthetic_sound

RATE = 44100


def pictures(seconds: int, seed: int) -> list[np.ndarray]:
    """Textured noise, a picture of its own for every seed: a frame every 5 s (the picture stops before the sound
    does; fewer frames keep the models' share of the test small)."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(max(2, seconds // 5)):
        picture = Image.new("RGB", (192, 144), tuple(int(v) for v in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(picture)
        for _ in range(12):  # shapes of their own: random noise would look alike to a copy detector
            x, y = rng.integers(0, 192), rng.integers(0, 144)
            box = (int(x), int(y), int(x + rng.integers(10, 90)), int(y + rng.integers(10, 70)))
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
        frames.append(np.asarray(picture))
    return frames


def black(seconds: int) -> list[np.ndarray]:
    return [np.zeros((96, 128, 3), np.uint8) for _ in range(max(2, seconds // 5))]


def video(frames: list[np.ndarray], sound: np.ndarray, **options: int) -> bytes:
    return encode_video_with_sound(frames, 1, sound, RATE, **options)


def audio_matches(response: pb.MatchResponse, reference_id: int | None = None) -> list[pb.Match]:
    return [m for m in response.matches if m.signal_name == "audio"
            and (reference_id is None or m.reference_id == reference_id)]


def codes(inference: Inference, data: bytes) -> np.ndarray:
    return inference.media_features(data, frozenset({"audio"})).audio_codes


def best_similarity(index: AudioIndex, query: np.ndarray) -> float:
    _, _, _, scores = index.search(query.reshape(-1, 1), 0.0, 16, 64, 64)
    return float(scores.max()) if len(scores) else 0.0


def test_a_sound_survives_re_encoding_resampling_and_volume_but_other_sound_does_not(inference: Inference) -> None:
    sound = synthetic_sound(30, seed=1)
    index = AudioIndex()
    index.add(7, codes(inference, video(pictures(30, 1), sound)).reshape(-1, 1))
    variants = {
        "aac 32 kbit/s at 22.05 kHz": video(black(20), sound[5 * RATE:25 * RATE], audio_rate=22050, bitrate=32000),
        "volume x0.3": video(black(20), sound[5 * RATE:25 * RATE] * 0.3),
        "shifted 0.06 s": video(black(20), np.concatenate([np.zeros(int(0.06 * RATE), np.float32),
                                                          sound[5 * RATE:25 * RATE]])),
    }
    for name, data in variants.items():
        assert best_similarity(index, codes(inference, data)) > 0.7, name
    others = [best_similarity(index, codes(inference, video(black(20), synthetic_sound(20, seed=s))))
              for s in range(10, 16)]
    assert max(others) < 0.45, others  # unrelated sound finds no exact code, or scores ~0.15 where it does



def test_the_audio_index_forgets_and_survives_a_snapshot(inference: Inference, tmp_path: Path) -> None:
    index = AudioIndex()
    first = codes(inference, video(black(20), synthetic_sound(20, seed=2)))
    second = codes(inference, video(black(20), synthetic_sound(20, seed=3)))
    index.add_many([(1, first.reshape(-1, 1)), (2, second.reshape(-1, 1))])
    index.save(tmp_path / "audio.idx")
    loaded = AudioIndex.load(tmp_path / "audio.idx")
    assert len(loaded) == len(first) + len(second) and loaded.owners() == {1, 2}
    assert best_similarity(loaded, second) > 0.99
    assert loaded.remove([2]) == 1
    assert best_similarity(loaded, second) < 0.45
    with pytest.raises(ValueError, match="snapshot"):
        (tmp_path / "bad.idx").write_bytes(b"not a snapshot")
        AudioIndex.load(tmp_path / "bad.idx")


@pytest.fixture(scope="module")
def served(postgres_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(postgres_server, tmp_path_factory.mktemp("audio")) as running:  # audio is a default signal
        yield running


def test_a_copy_with_its_picture_replaced_matches_on_its_sound_with_its_segment(served: Served) -> None:
    client = served.client
    sound = synthetic_sound(30, seed=21)
    reference_id = client.register_reference("audio-case", video(pictures(30, 21), sound)).reference_id

    # 20 s of the reference's sound from 5 s on, resampled and quieter, over a black picture
    copy = video(black(20), sound[5 * RATE:25 * RATE] * 0.5, audio_rate=22050, bitrate=48000)
    source = pb.Source(url="https://tube.example/v/1.mp4", site="tube.example")
    found = audio_matches(client.match(copy, source=source), reference_id)
    assert found, "the copy's sound did not match"
    match = found[0]
    assert match.signal == pb.SIGNAL_AUDIO and match.confidence.audio_only and not match.confidence.face_only
    assert match.target_segment.start_s == pytest.approx(5.0, abs=2.0)
    assert match.target_segment.end_s == pytest.approx(25.0, abs=2.0)
    assert match.query_segment.start_s == pytest.approx(0.0, abs=2.0)
    assert match.query_segment.end_s == pytest.approx(20.0, abs=2.0)
    with psycopg.connect(served.database_url) as conn:  # stored as weaker evidence, for the console and reports
        stored = conn.execute("select audio_only, face_only from matches where reference_id = %s and signal = 'audio'",
                              (reference_id,)).fetchall()
    assert stored and all(audio_only and not face_only for audio_only, face_only in stored)

    # the same picture with its own sound is found by the picture, and not labelled weak
    same = client.match(video(pictures(30, 21), sound))
    assert any(m.reference_id == reference_id and m.signal_name != "audio" for m in same.matches)
    assert not any(m.confidence.audio_only for m in same.matches if m.reference_id == reference_id)

    other = client.match(video(pictures(20, 22), synthetic_sound(20, seed=22)))
    # (the copy detector may still pair two drawings of coloured shapes: that is the picture's precision, not this)
    assert not audio_matches(other, reference_id), "other sound matched"


def test_a_jingle_shared_by_many_unrelated_videos_makes_no_match(served: Served) -> None:
    client = served.client
    jingle = synthetic_sound(4, seed=40)
    reference = video(pictures(30, 41), np.concatenate([jingle, synthetic_sound(26, seed=41)]))
    reference_id = client.register_reference("jingle-case", reference).reference_id
    for seed in range(50, 56):  # six unrelated videos of one site, each opening with its jingle, crawled in turn
        sighting = video(pictures(20, seed), np.concatenate([jingle, synthetic_sound(16, seed=seed)]))
        source = pb.Source(url=f"https://tube.example/v/{seed}.mp4", site="tube.example")
        response = client.match(sighting, source=source, include_sightings=True)  # stored, and each one searched
        assert not audio_matches(response), f"the jingle made a match ({seed})"
    # the reference's own sound, jingle and all, still matches it
    assert audio_matches(client.match(video(black(30), np.concatenate([jingle, synthetic_sound(26, seed=41)]))),
                         reference_id)


def test_audio_is_registered_as_a_signal_of_its_own() -> None:
    audio = SIGNALS["audio"]
    assert audio.evidence == "sound" and not audio.verifiable and audio.proto_value == pb.SIGNAL_AUDIO
    assert "audio" in MatchSettings().signals.split(",")
