"""Evidence reports: the PDF renders with poppler and carries every hash and time, the HWPX is a well-formed package
that python-hwpx reopens, and long URLs stay inside the page."""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import subprocess
import zipfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from lxml import etree
from PIL import Image, ImageDraw

from clients.evidence.reports import ArtefactHash, MatchExplanation, ReportItem, hwpx_report, pdf_report

TITLE = "[유출] 테스트 게시물 제목 (benign fixture)"
CAPTURED = datetime(2024, 5, 1, 3, 4, 5, tzinfo=UTC)
CAPTURED_KST = "2024-05-01 12:04:05 KST"
GENERATED = datetime(2024, 5, 2, 9, 30, 0, tzinfo=UTC)
LONG_URL = "https://board.example.kr/view.php?" + "&".join(f"param{i}=value{i:04d}" for i in range(25))  # ~500 chars
DATA_URL = "data:image/jpeg;base64," + "QUJD" * 1500  # far past the clip limit
A4_WIDTH_PT = 595.3

needs_poppler = pytest.mark.skipif(
    not (shutil.which("pdftoppm") and shutil.which("pdftotext")), reason="poppler-utils not installed"
)


def screenshot(width: int, height: int, label: str) -> bytes:
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, width, 60), fill=(40, 70, 140))
    draw.text((20, 20), f"benign fixture page: {label}", fill="white")
    for y in range(100, height, 120):
        draw.rectangle((20, y, width - 20, y + 80), outline=(120, 120, 120))
        draw.text((30, y + 30), f"post body line at y={y}", fill="black")
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def artefacts(png: bytes, tag: str) -> list[ArtefactHash]:
    payloads = {"warc": f"warc {tag}".encode(), "media": f"media {tag}".encode(), "metadata": f"meta {tag}".encode()}
    types = {"warc": "application/warc", "media": "video/mp4", "metadata": "application/json"}
    found = [ArtefactHash("screenshot", hashlib.sha256(png).hexdigest(), len(png), "image/png")]
    found += [ArtefactHash(k, hashlib.sha256(v).hexdigest(), len(v), types[k]) for k, v in payloads.items()]
    return found


@pytest.fixture(scope="module")
def items() -> list[ReportItem]:
    shot_a = screenshot(1280, 900, "match")
    shot_b = screenshot(800, 4000, "under 19")  # very tall: the report shows its top part
    match = MatchExplanation(
        signal="embedding",
        score=0.8731,
        threshold=0.62,
        reference_id=4021,
        case_id="CASE-2024-0117",
        reference_segment=(62.0, 75.5),
        sighting_segment=(3.0, 16.5),
        matched_frames=14,
        faces=[{"age": 24.3, "age_std": 3.8, "p_under19": 0.07, "under_19": False}],
    )
    return [
        ReportItem(
            item_id=101,
            reason="match",
            case_id="CASE-2024-0117",
            site="board.example.kr",
            page_url=LONG_URL,
            media_url="https://cdn.example.kr/v/" + "a1b2c3d4" * 12 + ".mp4",
            title=TITLE,
            author="uploader_77",
            posted_at=datetime(2024, 4, 30, 22, 0, 0, tzinfo=timezone(timedelta(hours=9))),
            captured_at=CAPTURED,
            page_status=200,
            media_sha256_matches=True,
            screenshot_png=shot_a,
            artefacts=artefacts(shot_a, "a"),
            matches=[match],
            log_seq=57,
            log_entry_hash=hashlib.sha256(b"log entry 57").hexdigest(),
        ),
        ReportItem(
            item_id=102,
            reason="under_19",
            case_id=None,
            site="sns.example.com",
            page_url="https://sns.example.com/p/998877",
            media_url=DATA_URL,
            title="second benign fixture post",
            author="",
            posted_at=None,
            captured_at=CAPTURED + timedelta(minutes=5),
            page_status=200,
            media_sha256_matches=None,
            screenshot_png=shot_b,
            artefacts=artefacts(shot_b, "b"),
            matches=[],
            log_seq=58,
            log_entry_hash=hashlib.sha256(b"log entry 58").hexdigest(),
        ),
    ]


def all_hashes(items: list[ReportItem]) -> list[str]:
    return [a.sha256 for item in items for a in item.artefacts] + [item.log_entry_hash for item in items]


def pdf_text(pdf: bytes, tmp_path: Path, *args: str) -> str:
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    return subprocess.run(["pdftotext", *args, str(path), "-"], check=True, capture_output=True, text=True).stdout


@needs_poppler
def test_pdf_renders_with_every_hash_and_time(items: list[ReportItem], tmp_path: Path) -> None:
    pdf = pdf_report(items, title=TITLE, generated_at=GENERATED, generated_by="officer kim", language="ko")
    assert pdf.startswith(b"%PDF-")
    (tmp_path / "report.pdf").write_bytes(pdf)
    subprocess.run(["pdftoppm", "-png", "-r", "50", str(tmp_path / "report.pdf"), str(tmp_path / "page")], check=True)
    pages = sorted(tmp_path.glob("page-*.png"))
    assert len(pages) >= 3  # cover, then each item starts on a new page
    for page in pages:
        assert page.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(page) as image:
            assert image.size == pytest.approx((413, 585), abs=2)  # A4 at 50 dpi
            assert image.convert("L").getextrema()[0] < 100  # something dark was drawn

    text = pdf_text(pdf, tmp_path)
    assert TITLE in text
    assert CAPTURED_KST in text and "2024-05-01 03:04:05 UTC" in text
    assert "2024-04-30 22:00:00 KST" in text  # the post time, given in +09:00, shown in KST
    flat = re.sub(r"\s+", "", text)
    for digest in all_hashes(items):
        assert digest in flat, digest
    assert re.sub(r"\s+", "", LONG_URL) in flat
    assert "01:02–01:15" in text and "00:03–00:16" in text  # reference and found-video segments
    assert "~24세 (±4)" in text and "판단이 아닌 분류(트리아지) 신호" in text
    assert "19세 미만으로 추정되는 얼굴" in text  # the under-19 item says why, and that an officer must check
    assert "위쪽 1080px만 보입니다 (전체 4000px)" in text  # the tall screenshot is cropped and says so
    assert "jiwoom 증거 보고서 · 1 / " in text
    assert "이하 5423자 생략" in text  # the data: URL is clipped, not laid out over pages

    images = subprocess.run(["pdfimages", "-list", str(tmp_path / "report.pdf")], check=True, capture_output=True,
                            text=True).stdout.splitlines()[2:]
    assert len(images) == 2


@needs_poppler
def test_pdf_long_values_stay_inside_the_page(items: list[ReportItem], tmp_path: Path) -> None:
    pdf = pdf_report(items, title=TITLE, generated_at=GENERATED, generated_by="officer kim")
    boxes = pdf_text(pdf, tmp_path, "-bbox")
    right_edges = [float(x) for x in re.findall(r'<word [^>]*xMax="([\d.]+)"', boxes)]
    assert right_edges, "no words found"
    assert max(right_edges) <= A4_WIDTH_PT - 18 * 72 / 25.4 - 6  # 18 mm margin, then the frame's 6 pt padding


@needs_poppler
def test_pdf_in_english(items: list[ReportItem], tmp_path: Path) -> None:
    pdf = pdf_report(items, title=TITLE, generated_at=GENERATED, generated_by="officer kim", language="en")
    text = pdf_text(pdf, tmp_path)
    for label in ("Page URL", "Captured at (KST)", "Media bytes matched", "Why it was flagged", "Entry hash"):
        assert label in text
    assert "estimated ~24 (±4), a triage signal, not a verdict" in text
    assert "jiwoom evidence report · page 1 / " in text
    assert "게시물 URL" not in text and "판단 근거" not in text
    assert TITLE in text  # page data is never translated


def test_hwpx_is_a_valid_package(items: list[ReportItem]) -> None:
    from hwpx import HwpxDocument, validate_package

    data = hwpx_report(items, title=TITLE, generated_at=GENERATED, generated_by="officer kim")
    archive = zipfile.ZipFile(io.BytesIO(data))
    first = archive.infolist()[0]
    assert first.filename == "mimetype" and first.compress_type == zipfile.ZIP_STORED
    assert archive.read("mimetype") == b"application/hwp+zip"
    names = set(archive.namelist())
    assert {"Contents/content.hpf", "Contents/section0.xml", "Contents/header.xml", "META-INF/container.xml"} <= names
    for name in names:
        if name.endswith((".xml", ".hpf", ".rdf")):
            etree.fromstring(archive.read(name))  # raises on a malformed part

    section = etree.fromstring(archive.read("Contents/section0.xml"))
    text = "".join(section.itertext())
    assert TITLE in text and CAPTURED_KST in text and LONG_URL in text
    for digest in all_hashes(items):
        assert digest in text, digest
    assert "판단이 아닌 분류(트리아지) 신호" in text
    assert "이하 5423자 생략" in text and DATA_URL not in text

    pictures = sorted(n for n in names if n.startswith("BinData/"))
    assert len(pictures) == 2
    for name in pictures:
        assert archive.read(name)[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(archive.read(pictures[1]))) as tall:
        assert tall.size == (800, 1080)  # the cropped top of the 800x4000 capture

    assert validate_package(data).ok
    doc = HwpxDocument.open(data)
    try:
        assert doc.validate().ok
        assert TITLE in doc.text.plain()
        assert doc.parts.metadata is not None and doc.parts.metadata.creator == "officer kim"
    finally:
        doc.close()


def test_hwpx_in_english(items: list[ReportItem]) -> None:
    data = hwpx_report(items, title=TITLE, generated_at=GENERATED, generated_by="officer kim", language="en")
    section = etree.fromstring(zipfile.ZipFile(io.BytesIO(data)).read("Contents/section0.xml"))
    text = "".join(section.itertext())
    assert "Captured at (KST)" in text and "a triage signal, not a verdict" in text
    assert "캡처 시각" not in text


def test_bad_inputs_fail_clearly(items: list[ReportItem], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="language"):
        pdf_report(items, title=TITLE, generated_at=GENERATED, generated_by="x", language="fr")
    with pytest.raises(ValueError, match="timezone-aware"):
        hwpx_report(items, title=TITLE, generated_at=datetime(2024, 5, 2, 9, 30), generated_by="x")
    monkeypatch.setenv("JIWOOM_FONT_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="fonts-nanum"):
        pdf_report(items, title=TITLE, generated_at=GENERATED, generated_by="x")


def test_screenshots_are_blurred_unless_revealed(items: list[ReportItem]) -> None:
    def pictures(data: bytes) -> list[Image.Image]:
        archive = zipfile.ZipFile(io.BytesIO(data))
        return [Image.open(io.BytesIO(archive.read(n))) for n in sorted(archive.namelist())
                if n.startswith("BinData/")]

    original = Image.open(io.BytesIO(items[0].screenshot_png)).convert("L")
    blurred = pictures(hwpx_report(items, title=TITLE, generated_at=GENERATED, generated_by="x"))[0]
    revealed = pictures(hwpx_report(items, title=TITLE, generated_at=GENERATED, generated_by="x", reveal=True))[0]
    assert blurred.mode == "L" and revealed.mode != "L"

    def detail(image: Image.Image) -> float:  # mean absolute step between neighbouring pixels
        a = np.asarray(image.convert("L"), dtype=np.float32)
        return float(np.abs(np.diff(a, axis=1)).mean())

    assert detail(blurred) < 0.5 * detail(original) and detail(revealed) > 0.9 * detail(original)
    text = subprocess.run(["pdftotext", "-", "-"], input=pdf_report(items, title=TITLE, generated_at=GENERATED,
                                                                    generated_by="x"),
                          capture_output=True, check=True, timeout=60).stdout.decode()
    assert "흐리게 처리" in text
