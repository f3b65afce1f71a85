"""What examining crawled posts for a victim's personal information costs (issue 16).

    .venv/bin/python -m bench.exposure_cost [--images 20] [--repeats 20] [--out report.md]

Two parts, both in one run:
- the text: `CaseIdentifiers.examine` (normalising, every candidate form's keyed digest, the generic patterns) on
  post texts of 200, 2,000 and 20,000 characters, with 10 and 1,000 recorded identifiers, per post;
- the OCR that examining adds to a recorded item: the features `Match` computes for a corpus image, with and
  without the `ocr` family, alternating image by image so the machine's load falls on both alike.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from bench.record import machine, publish
from bench.transforms import CORPUS
from server.config import ServiceSettings, Settings
from server.inference.inprocess import InProcessInference
from server.matching.identifiers import IdentifierKey
from server.service import match_families
from server.service.identifiers import CaseIdentifiers
from server.storage.store import SourceRecord

WORDS = ("오늘", "올라온", "영상", "원본", "게시판", "퍼가지", "마세요", "연락", "주세요", "유출", "full", "ver",
         "2026", "링크", "댓글", "확인", "010-", "카톡", "사진", "모음")


def post_text(chars: int, rng: random.Random) -> str:
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < chars:
        words.append(rng.choice(WORDS))
    return " ".join(words)[:chars]


def recorded(count: int, key: IdentifierKey) -> dict[bytes, list[tuple[str, str]]]:
    out: dict[bytes, list[tuple[str, str]]] = {}
    for i in range(count):
        phone = f"010{i:08d}"
        out[key.record("phone", phone)] = [(f"case-{i}", "phone")]
    return out


def text_cost(repeats: int) -> list[tuple[int, int, bool, float]]:
    rng = random.Random(16)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        identifiers = CaseIdentifiers(Settings(service=ServiceSettings(data_dir=tmp)))
        key = IdentifierKey(bytes(range(32)))
        identifiers._key = key  # the bench times the search, not the key file
        for count in (10, 1000):
            identifiers._recorded = recorded(count, key)
            for chars in (200, 2000, 20000):
                for suspected in (False, True):
                    sources = [SourceRecord(url="u", title=post_text(60, rng), text=post_text(chars, rng),
                                            suspected=suspected) for _ in range(repeats)]
                    start = time.perf_counter()
                    for source in sources:
                        identifiers.examine(source, [])
                    rows.append((count, chars, suspected, (time.perf_counter() - start) / repeats * 1000))
    return rows


def ocr_cost(images: int) -> tuple[float, float, int]:
    paths = sorted((CORPUS / "images").glob("*.jpg"))[:images]
    families = match_families()
    without, with_ocr = [], []
    with InProcessInference(Settings()) as engine:
        engine.media_features(paths[0].read_bytes(), families | {"ocr"})  # load the models, not timed
        for path in paths:
            data = path.read_bytes()
            for chosen, into in ((families, without), (families | {"ocr"}, with_ocr)):
                start = time.perf_counter()
                engine.media_features(data, frozenset(chosen))
                into.append((time.perf_counter() - start) * 1000)
    return statistics.median(without), statistics.median(with_ocr), len(paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    started = time.time()
    text = text_cost(args.repeats)
    base_ms, ocr_ms, count = ocr_cost(args.images)
    lines = [
        "## Examining posts for personal information (issue 16): cost per crawled item "
        "(`python -m bench.exposure_cost`)", "",
        f"- Machine: {machine()}",
        f"- Command: `python -m bench.exposure_cost --images {args.images} --repeats {args.repeats}`",
        f"- Wall time: {(time.time() - started) / 60:.1f} min", "",
        "Text (`CaseIdentifiers.examine` on a 60-character title and a text of the given length; generic patterns "
        "only on suspected posts):", "",
        "| recorded identifiers | text characters | suspected | ms per post |", "|---|---|---|---|",
        *[f"| {c} | {n} | {'yes' if s else 'no'} | {ms:.2f} |" for c, n, s, ms in text],
        "", f"OCR added to a recorded image's features (median over {count} corpus images, alternating):", "",
        "| features | ms per image |", "|---|---|",
        f"| what `Match` computes | {base_ms:.0f} |",
        f"| the same and OCR (examining: some case has identifiers, or the post is suspected) | {ocr_ms:.0f} |",
    ]
    publish("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
