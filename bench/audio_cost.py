"""What the audio signal costs per minute of video: decoding the sound, fingerprinting it, and searching a minute
of it against an index of N minutes of stored sound.

    .venv/bin/python -m bench.audio_cost [--minutes 100,1000] [--seed 0]

The sound is synthetic (tests/media_samples.synthetic_sound: chords changing every quarter second), in an MP4
with AAC at 22.05 kHz, 48 kbit/s; the stored minutes are fingerprints of other synthetic sounds, and of the
query's own sound at 160 kbit/s, so every search also finds its match. One process, one thread.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.record import machine
from server.config import MatchSettings, Settings
from server.index.audio import AudioIndex
from server.inference.features import MediaFeatures
from server.media import AUDIO_RATE, decode_media
from server.models.audio_fingerprint import AudioFingerprintModel
from server.signals import SIGNALS, Hits, SignalVectors
from server.signals.audio import AudioSignal
from tests.media_samples import encode_video_with_sound, synthetic_sound


def best_of(runs: int, work) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", default="100,1000", help="stored minutes of sound to search, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model = AudioFingerprintModel(Settings())
    sound = synthetic_sound(60.0, args.seed)
    picture = [np.zeros((96, 128, 3), np.uint8)] * 2
    clip = encode_video_with_sound(picture, 1, sound, audio_rate=22050, bitrate=48000)
    decode = best_of(3, lambda: decode_media(clip))
    samples = decode_media(clip).audio
    fingerprint = best_of(3, lambda: model(audio=samples))
    query = model(audio=samples)["audio_codes"].view(np.uint32)
    print(f"# audio_cost on {machine()}")
    print(f"decode (the whole MP4: 2 frames + 60 s of AAC to 11025 Hz mono): {decode * 1000:.0f} ms per minute")
    print(f"fingerprint (libchromaprint): {fingerprint * 1000:.1f} ms per minute, {len(query)} codes")
    signal = SIGNALS["audio"]
    assert isinstance(signal, AudioSignal)
    settings = MatchSettings()
    index = AudioIndex()
    original = decode_media(encode_video_with_sound(picture, 1, sound, bitrate=160000)).audio
    index.add(0, model(audio=original)["audio_codes"].view(np.uint32).reshape(-1, 1))
    stored = 1
    for target in sorted(int(m) for m in args.minutes.split(",")):
        while stored < target:
            other = synthetic_sound(60.0, args.seed + 1000 + stored, rate=AUDIO_RATE)
            pcm = (other * 32767).astype(np.int16)
            index.add(stored, model(audio=pcm)["audio_codes"].view(np.uint32).reshape(-1, 1))
            stored += 1
        queries = signal.query_vectors(MediaFeatures((0, 0), 60.0, [], query), settings)
        def run(queries: SignalVectors = queries) -> Hits:
            return signal.search(index, queries, settings.audio_min_similarity, settings)

        search = best_of(3, run)
        hits = run()
        print(f"search a minute against {stored} stored minutes ({len(index)} codes, "
              f"{index.memory_bytes() / 2**20:.1f} MiB): {search * 1000:.1f} ms, {len(hits)} rows found")


if __name__ == "__main__":
    main()
