"""The hybrid OCR (RapidOCR detector + Tesseract kor+eng) on captions rendered onto corpus photos; real models."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from bench.transforms import load
from server.config import ModelSettings, Settings
from server.models.ocr import OcrLine, OcrModel, tessdata_dir

FONT = Path("/usr/share/fonts/truetype/nanum/NanumGothicBold.ttf")
CAPTIONS = ("피해자 보호 센터", "DELETE THIS VIDEO 2026")  # top line, bottom line
PHOTOS = ("img_0010.jpg", "img_0012.jpg")  # a beach; a busy flower bed in front of a brick wall
MAX_CER = 0.2


@pytest.fixture(scope="module")
def model() -> Iterator[OcrModel]:
    engine = OcrModel(Settings())
    yield engine
    engine.close()


def photo(corpus: Path, name: str) -> Image.Image:
    return load(corpus / "images" / name)


def caption(image: Image.Image, style: str) -> np.ndarray:
    """Both captions, centred in the lower third: black on one white band, or white with a thin black outline
    straight over the photo."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    size = max(16, image.height // 14)
    font = ImageFont.truetype(str(FONT), size)
    top = round(image.height * 0.62)
    step = round(size * 1.6)
    if style == "band":
        draw.rectangle((0, top - size * 0.4, image.width, top + step * len(CAPTIONS) - size * 0.2), fill="white")
    for row, text in enumerate(CAPTIONS):
        x = (image.width - draw.textlength(text, font=font)) / 2
        y = top + row * step
        if style == "band":
            draw.text((x, y), text, font=font, fill="black")
        else:
            draw.text((x, y), text, font=font, fill="white", stroke_width=max(1, size // 12), stroke_fill="black")
    return np.asarray(out)


def squash(text: str) -> str:
    return "".join(text.split())


def substring_cer(expected: str, text: str) -> float:
    """Edits to turn `expected` into its best-matching substring of `text`, per character of `expected`.

    Levenshtein with free start and end in `text`: the photo may add text of its own around the caption."""
    previous = [0] * (len(text) + 1)  # a match may start anywhere in text at no cost
    for i, want in enumerate(expected, 1):
        current = [i]
        for j, got in enumerate(text, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (want != got)))
        previous = current
    return min(previous) / len(expected)  # ... and end anywhere


def test_substring_cer() -> None:
    assert substring_cer("abc", "xxabcxx") == 0.0
    assert substring_cer("abcd", "abxd") == 0.25
    assert substring_cer("abc", "") == 1.0


@pytest.mark.parametrize("style", ["band", "outline"])
@pytest.mark.parametrize("name", PHOTOS)
def test_reads_korean_and_english_caption(model: OcrModel, corpus: Path, name: str, style: str) -> None:
    frames = caption(photo(corpus, name), style)[None]
    started = time.perf_counter()
    out = model(frames)["ocr_text"]
    elapsed_ms = (time.perf_counter() - started) * 1000

    assert out.shape == (1,) and out.dtype == object and isinstance(out[0], bytes)
    text = out[0].decode("utf-8")
    cers = [substring_cer(squash(c), squash(text)) for c in CAPTIONS]
    print(f"{name} {style}: CER {cers[0]:.2f} / {cers[1]:.2f}, {elapsed_ms:.0f} ms: {text!r}")
    assert all(cer <= MAX_CER for cer in cers), f"{cers} for {text!r}"
    # Reading order: the Korean line is above the English one.
    lines = [squash(line) for line in text.split("\n")]
    korean = next(i for i, line in enumerate(lines) if substring_cer(squash(CAPTIONS[0]), line) <= MAX_CER)
    english = max(i for i, line in enumerate(lines) if substring_cer("2026", line) == 0)
    assert korean < english


def test_read_lines_boxes(model: OcrModel, corpus: Path) -> None:
    frame = caption(photo(corpus, PHOTOS[0]), "band")
    lines = model.read_lines(frame)
    assert lines and all(isinstance(line, OcrLine) for line in lines)
    height, width = frame.shape[:2]
    for line in lines:
        x0, y0, x1, y1 = line.box
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert 0.0 < line.confidence <= 1.0 and line.text.strip()
    # The captions sit in the lower part of the photo; their boxes must too.
    assert all(line.box[1] > height * 0.5 for line in lines)
    assert [line.box[1] for line in lines] == sorted(line.box[1] for line in lines)


def test_photos_without_text_read_little(model: OcrModel, corpus: Path) -> None:
    frames = np.stack([np.asarray(photo(corpus, name)) for name in PHOTOS])
    out = model(frames)["ocr_text"]
    assert out.shape == (len(PHOTOS),)
    for text in out:
        assert len(squash(text.decode("utf-8"))) <= 4, text


def test_batch_keeps_frames_apart(model: OcrModel, corpus: Path) -> None:
    plain = np.asarray(photo(corpus, PHOTOS[1]))
    captioned = caption(photo(corpus, PHOTOS[1]), "band")
    out = model(np.stack([plain, captioned, plain]))["ocr_text"]
    assert out.shape == (3,)
    assert len(out[1]) > 10 and len(out[0]) <= 4 and out[0] == out[2]


def test_concurrent_calls_match_sequential(model: OcrModel, corpus: Path) -> None:
    frames = [caption(photo(corpus, name), style)[None] for name in PHOTOS for style in ("band", "outline")]
    sequential = [model(f)["ocr_text"][0] for f in frames]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = [out["ocr_text"][0] for out in pool.map(model, frames)]
    assert concurrent == sequential


def test_strided_frames(model: OcrModel, corpus: Path) -> None:
    frame = caption(photo(corpus, PHOTOS[0]), "band")
    spread = np.zeros((frame.shape[0], frame.shape[1] * 2, 3), np.uint8)
    spread[:, ::2] = frame
    strided = spread[None, :, ::2]  # the same pixels as a non-contiguous view, as a decoder may hand them over
    assert not strided.flags.c_contiguous
    assert model(strided)["ocr_text"][0] == model(frame[None])["ocr_text"][0]


def test_empty_batch(model: OcrModel) -> None:
    out = model(np.zeros((0, 64, 64, 3), np.uint8))["ocr_text"]
    assert out.shape == (0,) and out.dtype == object


@pytest.mark.parametrize("side", [1, 8])
def test_tiny_images(model: OcrModel, side: int) -> None:
    for fill in (0, 255):
        out = model(np.full((1, side, side, 3), fill, np.uint8))["ocr_text"]
        assert out.shape == (1,) and isinstance(out[0], bytes)


def test_rejects_wrong_layout(model: OcrModel) -> None:
    with pytest.raises(ValueError):
        model(np.zeros((32, 32, 3), np.uint8))


def test_max_lines_cap(corpus: Path) -> None:
    capped = OcrModel(Settings(models=ModelSettings(ocr_max_lines=1)))
    try:
        lines = capped.read_lines(caption(photo(corpus, PHOTOS[0]), "band"))
    finally:
        capped.close()
    # The larger box (the longer English line) is the one kept.
    assert len(lines) == 1 and "2026" in lines[0].text


def test_missing_korean_traineddata_fails_at_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    os.symlink(tessdata_dir() / "eng.traineddata", tmp_path / "eng.traineddata")
    monkeypatch.setenv("TESSDATA_PREFIX", str(tmp_path))
    with pytest.raises(RuntimeError, match="kor"):
        OcrModel(Settings())
