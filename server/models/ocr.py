"""Hybrid OCR for Korean + English: RapidOCR's PP-OCRv6 detector finds text lines, Tesseract reads them.

RapidOCR's bundled recognisers have no Hangul and Tesseract's own layout analysis misses text over photos, so each
does the half it is good at. Everything is loaded from installed packages; nothing is downloaded.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import rapidocr
import tesserocr

# rapidocr's own DB post-processing, matched to its detector. Its RapidOCR wrapper is not used: it re-sorts boxes
# without their scores and only resizes by a min- or max-side limit.
from rapidocr.ch_ppocr_det.utils import DBPostProcess

from server.config import Settings
from server.models.onnx_session import open_session

_DET_MODEL = "PP-OCRv6_det_small.onnx"  # the detector rapidocr 3.10 ships inside its wheel
_TESSDATA_DIRS = ("/usr/share/tesseract-ocr/5/tessdata", "/usr/share/tesseract-ocr/4.00/tessdata")

# The detector runs on about this many pixels, scaling up or down: its time is proportional to them, small photos'
# captions are only found upscaled, and a pixel budget (not a side limit) keeps tall phone screenshots legible.
_DET_PIXELS = 500_000
_DET_MAX_UPSCALE = 3.0  # thumbnails: beyond this the detector sees only blur
_DET_MIN_SCORE = 0.5  # mean text probability inside a box (rapidocr's box_thresh)

_TARGET_BOX_H = 48  # detected boxes carry ~40% margin, so this puts glyphs near tesseract's ~32 px sweet spot
_MAX_BOX_H = 96  # taller crops are shrunk: no accuracy gain, only time
_MIN_BOX_H = 8  # below this even upscaled glyphs are mush
_MIN_CONFIDENCE = 50.0  # tesseract mean word confidence (0..100); textures misread as text score lower
_MAX_REDETECT = 3  # unreadable large boxes per image that get a second, closer detection
_MIN_LINE_CONFIDENCE = 0.45  # times the detector score: misreads of textures sit near 0.3, captions above 0.6
_SURE_CONFIDENCE = 85.0  # a read this confident is kept without trying other binarisations
_CHAR_BLACKLIST = "®©™§¶|"  # rare in captions, common as misreads of O, C, I and l in outlined text


@dataclass(frozen=True)
class OcrLine:
    text: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels of the input image
    confidence: float  # 0..1: tesseract's word confidence times the detector's score


def det_model_path() -> Path:
    """The detector ONNX file inside the installed rapidocr package (never its download location)."""
    models = Path(rapidocr.__file__).resolve().parent / "models"
    preferred = models / _DET_MODEL
    if preferred.is_file():
        return preferred
    found = sorted(models.glob("*det*.onnx"))
    if not found:
        raise RuntimeError(f"no bundled text detector (*det*.onnx) in {models}; reinstall rapidocr")
    return found[0]


def tessdata_dir() -> Path:
    """TESSDATA_PREFIX if set (the tessdata folder itself or its parent), else the Debian locations."""
    candidates: list[Path] = []
    env = os.environ.get("TESSDATA_PREFIX")
    if env:
        candidates += [Path(env), Path(env) / "tessdata"]
    candidates += [Path(d) for d in _TESSDATA_DIRS]
    for folder in candidates:
        if folder.is_dir() and any(folder.glob("*.traineddata")):
            return folder
    raise RuntimeError(
        f"no tessdata found in {', '.join(map(str, candidates))}: install tesseract-ocr-kor or set TESSDATA_PREFIX"
    )


class OcrModel:
    """frames uint8 [F,H,W,3] RGB -> {"ocr_text": object [F] of UTF-8 bytes, lines joined by "\\n"}."""

    def __init__(self, settings: Settings) -> None:
        config = settings.models
        self.max_lines = config.ocr_max_lines

        self._det = open_session(det_model_path(), config.threads, config.onnx_providers)
        self._det_input = self._det.get_inputs()[0].name
        self._db = DBPostProcess(
            thresh=0.3, box_thresh=_DET_MIN_SCORE, max_candidates=1000, unclip_ratio=1.6, use_dilation=True
        )

        tessdata = tessdata_dir()
        langs = [lang for lang in config.ocr_languages.split("+") if lang]
        missing = [lang for lang in langs if not (tessdata / f"{lang}.traineddata").is_file()]
        if not langs or missing:
            raise RuntimeError(
                f"tesseract traineddata for {missing or config.ocr_languages!r} not in {tessdata}: "
                "install tesseract-ocr-kor / tesseract-ocr-eng or set TESSDATA_PREFIX"
            )
        self._tess = tesserocr.PyTessBaseAPI(
            path=str(tessdata) + os.sep,  # some tesseract builds join file names onto it verbatim
            lang="+".join(langs),
            psm=tesserocr.PSM.SINGLE_LINE,
            oem=tesserocr.OEM.LSTM_ONLY,
        )
        self._tess.SetVariable("tessedit_char_blacklist", _CHAR_BLACKLIST)
        self._tess_lock = threading.Lock()  # a TessBaseAPI holds per-image state: one caller at a time

    def close(self) -> None:
        with self._tess_lock:
            self._tess.End()

    def __call__(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 [F,H,W,3], got {frames.dtype} {frames.shape}")
        out = np.empty(frames.shape[0], dtype=object)
        for i, frame in enumerate(frames):
            out[i] = "\n".join(line.text for line in self.read_lines(frame)).encode("utf-8")
        return {"ocr_text": out}

    def read_lines(self, image: np.ndarray) -> list[OcrLine]:
        """Text lines of one RGB image in reading order, at most `ocr_max_lines` (the largest kept)."""
        if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < _MIN_BOX_H:
            return []
        image = np.ascontiguousarray(image)  # OpenCV rejects strided views
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        quads, scores = self.detect(image)
        # Largest first: when capped, captions and headlines matter more than fine print.
        order = sorted(range(len(quads)), key=lambda i: -cv2.contourArea(quads[i]))
        lines: list[OcrLine] = []
        retries = _MAX_REDETECT
        for i in order[: 2 * self.max_lines]:  # bounded: garbage boxes on textured photos also cost a read
            if len(lines) >= self.max_lines:
                break
            line = self._read_quad(gray, quads[i], scores[i])
            if line is not None:
                lines.append(line)
            elif retries > 0 and _box_h(quads[i]) >= 2 * _MIN_BOX_H:
                # A plain caption band on a busy photo can be taken for one huge "line" that swallows the lines
                # printed on it. Alone, the band is just background, so a second look finds the real lines.
                retries -= 1
                for line in self._redetect(image, gray, quads[i], quads):
                    if len(lines) < self.max_lines:
                        lines.append(line)
        return _reading_order(lines)

    def _read_quad(self, gray: np.ndarray, quad: np.ndarray, score: float) -> OcrLine | None:
        crop = _line_crop(gray, quad)
        if crop is None:
            return None
        text, conf = self._read_best(crop)
        confidence = conf / 100.0 * score
        if conf < _MIN_CONFIDENCE or confidence < _MIN_LINE_CONFIDENCE or sum(c.isalnum() for c in text) < 2:
            return None
        return OcrLine(text, _bounds(quad, gray.shape), confidence)

    def _redetect(
        self, image: np.ndarray, gray: np.ndarray, quad: np.ndarray, known: list[np.ndarray]
    ) -> list[OcrLine]:
        x0, y0, x1, y1 = _bounds(quad, gray.shape)
        sub_quads, sub_scores = self.detect(image[y0:y1, x0:x1])
        found = []
        for sub, score in zip(sub_quads, sub_scores, strict=True):
            sub = sub + np.array([x0, y0], np.float32)
            # Skip the same blob found again, and lines the first pass already read on their own.
            if _overlap(sub, quad) > 0.8 and _box_h(sub) > 0.7 * _box_h(quad):
                continue
            if any(_overlap(sub, other) > 0.5 for other in known if other is not quad):
                continue
            line = self._read_quad(gray, sub, score)
            if line is not None:
                found.append(line)
        return found

    def detect(self, image: np.ndarray) -> tuple[list[np.ndarray], list[float]]:
        """Text-line quadrilaterals (tl, tr, br, bl; float32 [4,2] in image pixels) and detector scores."""
        h, w = image.shape[:2]
        scale = min((_DET_PIXELS / (h * w)) ** 0.5, _DET_MAX_UPSCALE)
        # The network downsamples by 32.
        dh, dw = (max(32, round(side * scale / 32) * 32) for side in (h, w))
        resized = cv2.resize(image, (dw, dh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        # PaddleOCR trained on OpenCV's BGR; normalised to [-1, 1].
        blob = (resized[..., ::-1].astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)[None]
        prob = self._det.run(None, {self._det_input: np.ascontiguousarray(blob)})[0]
        boxes, scores = self._db(prob, (h, w))
        return [np.asarray(b, np.float32) for b in boxes], [float(s) for s in scores]

    def _read_best(self, crop: np.ndarray) -> tuple[str, float]:
        """Read a line crop, trying cleaner binarisations only while no read is both sure and complete.

        Light text with a dark outline over a photo defeats tesseract's global Otsu threshold; masks of the
        bright or dark extremes, with background blobs removed, read cleanly. Ranking is by confidence, scaled
        down for reads much shorter than the longest: a mask that kept only a few glyphs (the letter rings of an
        outline) reads those few very confidently.
        """
        reads = [self._read(_pad(crop, replicate=True))]
        for variant in _binarised(crop):
            if _is_sure(reads):
                break
            reads.append(self._read(variant))
        return max(reads, key=lambda read: _rank(read, reads))

    def _read(self, crop: np.ndarray) -> tuple[str, float]:
        h, w = crop.shape
        data = np.ascontiguousarray(crop).tobytes()  # tesseract keeps a pointer, not a copy: hold it till read
        with self._tess_lock:
            self._tess.SetImageBytes(data, w, h, 1, w)
            self._tess.SetSourceResolution(300)  # crops carry no DPI; this stops tesseract guessing (and warning)
            text = " ".join(self._tess.GetUTF8Text().split())
            conf = float(self._tess.MeanTextConf())
        return (text, conf) if text else ("", 0.0)


def _rank(read: tuple[str, float], reads: list[tuple[str, float]]) -> float:
    """Confidence, discounted when the text is under 80% of the longest plausible read's length."""
    longest = max((_ink(text) for text, conf in reads if conf >= _MIN_CONFIDENCE), default=0)
    return read[1] * min(1.0, _ink(read[0]) / (0.8 * longest)) if longest else read[1]


def _is_sure(reads: list[tuple[str, float]]) -> bool:
    return any(conf >= _SURE_CONFIDENCE and _rank((text, conf), reads) >= _SURE_CONFIDENCE for text, conf in reads)


def _ink(text: str) -> int:
    return sum(not c.isspace() for c in text)


def _bounds(quad: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """Axis-aligned box of a quadrilateral, clipped to the image."""
    x0, y0 = np.floor(quad.min(axis=0)).astype(int)
    x1, y1 = np.ceil(quad.max(axis=0)).astype(int)
    return max(0, int(x0)), max(0, int(y0)), min(shape[1], int(x1)), min(shape[0], int(y1))


def _box_h(quad: np.ndarray) -> float:
    return float(max(np.linalg.norm(quad[0] - quad[3]), np.linalg.norm(quad[1] - quad[2])))


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over the smaller axis-aligned box: 1 when one box lies inside the other."""
    ax0, ay0 = a.min(axis=0)
    ax1, ay1 = a.max(axis=0)
    bx0, by0 = b.min(axis=0)
    bx1, by1 = b.max(axis=0)
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    smaller = min((ax1 - ax0) * (ay1 - ay0), (bx1 - bx0) * (by1 - by0))
    return float(inter / smaller) if smaller > 0 else 0.0


def _line_crop(gray: np.ndarray, quad: np.ndarray) -> np.ndarray | None:
    """Perspective-rectified crop of one detected quadrilateral, scaled to a height tesseract reads well."""
    w = max(np.linalg.norm(quad[0] - quad[1]), np.linalg.norm(quad[3] - quad[2]))
    h = max(np.linalg.norm(quad[0] - quad[3]), np.linalg.norm(quad[1] - quad[2]))
    if min(h, w) < _MIN_BOX_H:
        return None
    # Scale inside the warp: one interpolation instead of two.
    scale = _TARGET_BOX_H / h if h < _TARGET_BOX_H else min(1.0, _MAX_BOX_H / h)
    cw, ch = max(1, round(w * scale)), max(1, round(h * scale))
    target = np.array([[0, 0], [cw, 0], [cw, ch], [0, ch]], np.float32)
    matrix = cv2.getPerspectiveTransform(quad.astype(np.float32), target)
    crop = cv2.warpPerspective(gray, matrix, (cw, ch), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    if ch >= 1.5 * cw:
        crop = np.ascontiguousarray(np.rot90(crop))  # a tall box is vertical text: read it sideways, as rapidocr does
    return crop


def _pad(image: np.ndarray, replicate: bool) -> np.ndarray:
    """A margin: tesseract drops glyphs that touch the image edge."""
    pad = max(4, image.shape[0] // 6)
    if replicate:
        return cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    return cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=255)


def _binarised(crop: np.ndarray) -> Iterator[np.ndarray]:
    """Black-on-white masks of the likely glyph pixels, most useful first: the extremes (the white or black fill
    of outlined captions), then either side of Otsu's threshold."""
    lo, hi = np.percentile(crop, (10, 90))
    otsu, _ = cv2.threshold(crop, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    for mask in (crop >= min(hi, 230), crop <= max(lo, 25), crop > otsu, crop <= otsu):
        yield _pad(_drop_edge_components(mask), replicate=False)


def _drop_edge_components(mask: np.ndarray) -> np.ndarray:
    """Glyphs become black on white. Blobs touching the crop edge are background (the detector's box leaves a
    margin around real glyphs); specks smaller than an i's dot are noise tesseract would read as punctuation."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    h, w = mask.shape
    x, y, cw, ch, area = (stats[:, k] for k in range(5))
    keep = (x > 0) & (y > 0) & (x + cw < w) & (y + ch < h) & ((area >= (h / 16) ** 2) | (ch >= h / 8))
    keep[0] = False  # label 0 is everything outside the mask
    return np.where(keep[labels], 0, 255).astype(np.uint8)


def _reading_order(lines: list[OcrLine]) -> list[OcrLine]:
    """Top to bottom; left to right within a row (lines whose vertical centres lie within half a line height)."""
    rows: list[list[OcrLine]] = []
    for line in sorted(lines, key=lambda ln: ln.box[1] + ln.box[3]):
        if rows:
            first = rows[-1][0]
            tolerance = 0.5 * min(first.box[3] - first.box[1], line.box[3] - line.box[1])
            if abs((line.box[1] + line.box[3]) - (first.box[1] + first.box[3])) / 2 <= tolerance:
                rows[-1].append(line)
                continue
        rows.append([line])
    return [line for row in rows for line in sorted(row, key=lambda ln: ln.box[0])]
