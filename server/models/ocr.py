"""Hybrid OCR for Korean + English: RapidOCR's PP-OCRv6 detector finds text lines, Tesseract reads them.

RapidOCR's bundled recognisers have no Hangul and Tesseract's own layout analysis misses text over photos, so each
does the half it is good at. Everything is loaded from installed packages; nothing is downloaded.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import rapidocr
import tesserocr
from rapidocr import RapidOCR

from server.config import ModelSettings

log = logging.getLogger(__name__)

_DET_MODEL = "PP-OCRv6_det_small.onnx"  # the detector rapidocr 3.10 ships in its wheel
_TESSDATA_DIRS = ("/usr/share/tesseract-ocr/5/tessdata", "/usr/share/tesseract-ocr/4.00/tessdata")

_DET_LIMIT_TYPE = "max"
_DET_LIMIT_SIDE = 960
_TARGET_TEXT_H = 40  # tesseract's LSTM reads best at roughly 32-48 px line height
_MAX_CROP_H = 96  # taller crops are shrunk: no accuracy gain, only time
_MIN_BOX_H = 6  # below this even upscaled glyphs are mush
_MIN_CONFIDENCE = 45.0  # tesseract mean word confidence (0..100); garbage from textures sits lower
_SURE_CONFIDENCE = 85.0  # a read this confident is kept without trying other binarisations
_MIN_DET_SCORE = 0.5


@dataclass(frozen=True)
class OcrLine:
    text: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels of the input image
    confidence: float  # 0..1


def _det_model_path() -> Path:
    """The detector ONNX file inside the installed rapidocr package (never its download path)."""
    models = Path(rapidocr.__file__).resolve().parent / "models"
    preferred = models / _DET_MODEL
    if preferred.is_file():
        return preferred
    found = sorted(models.glob("*det*.onnx"))
    if not found:
        raise RuntimeError(f"no bundled text detector (*det*.onnx) in {models}; reinstall rapidocr")
    return found[0]


def _tessdata_dir() -> Path:
    """TESSDATA_PREFIX if set (either the tessdata folder or its parent), else the Debian locations."""
    candidates: list[Path] = []
    env = os.environ.get("TESSDATA_PREFIX")
    if env:
        candidates += [Path(env), Path(env) / "tessdata"]
    candidates += [Path(d) for d in _TESSDATA_DIRS]
    for d in candidates:
        if any(d.glob("*.traineddata")):
            return d
    raise RuntimeError(
        "no tessdata found (looked in " + ", ".join(map(str, candidates)) + "); install tesseract-ocr-kor"
    )


class OcrModel:
    """frames uint8 [F,H,W,3] RGB -> {"ocr_text": object [F] of UTF-8 bytes, lines joined by "\\n"}."""

    def __init__(self, settings: ModelSettings) -> None:
        self.max_lines = settings.ocr_max_lines
        threads = settings.threads if settings.threads > 0 else -1  # rapidocr's "one per core"
        self._det = RapidOCR(
            params={
                "Global.use_cls": False,
                "Global.use_rec": False,
                "Global.log_level": "error",
                "Det.model_path": str(_det_model_path()),  # explicit path: rapidocr never tries a download
                "Det.limit_type": _DET_LIMIT_TYPE,
                "Det.limit_side_len": _DET_LIMIT_SIDE,
                "EngineConfig.onnxruntime.intra_op_num_threads": threads,
                "EngineConfig.onnxruntime.inter_op_num_threads": 1,
            }
        )

        tessdata = _tessdata_dir()
        langs = [lang for lang in settings.ocr_languages.split("+") if lang]
        missing = [lang for lang in langs if not (tessdata / f"{lang}.traineddata").is_file()]
        if missing:
            raise RuntimeError(
                f"tesseract traineddata missing for {missing} in {tessdata}; "
                "install tesseract-ocr-kor / tesseract-ocr-eng (or set TESSDATA_PREFIX)"
            )
        # Tesseract wants the folder path with a trailing separator on some builds.
        self._tess = tesserocr.PyTessBaseAPI(
            path=str(tessdata) + os.sep,
            lang="+".join(langs),
            psm=tesserocr.PSM.SINGLE_LINE,
            oem=tesserocr.OEM.LSTM_ONLY,
        )
        self._tess_lock = threading.Lock()  # one TessBaseAPI is not thread-safe
        # Warm the detector so the first request does not pay ONNX Runtime's session start.
        self._detect(np.zeros((32, 32, 3), np.uint8))

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
        if image.ndim != 3 or min(image.shape[:2]) < 4:
            return []
        boxes, scores = self._detect(image)
        if not boxes:
            return []
        # Largest lines first: when capped, headline captions matter more than fine print.
        order = sorted(range(len(boxes)), key=lambda i: -_quad_area(boxes[i]))[: self.max_lines]
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        lines: list[OcrLine] = []
        for i in order:
            crop = _line_crop(gray, boxes[i])
            if crop is None:
                continue
            text, conf = self._read_best(crop)
            if not text or conf < _MIN_CONFIDENCE or not any(c.isalnum() for c in text):
                continue
            x0, y0 = boxes[i].min(axis=0)
            x1, y1 = boxes[i].max(axis=0)
            lines.append(OcrLine(text, (int(x0), int(y0), int(x1), int(y1)), conf / 100.0 * scores[i]))
        return _reading_order(lines)

    def _detect(self, image: np.ndarray) -> tuple[list[np.ndarray], list[float]]:
        # PaddleOCR models were trained on OpenCV's BGR; rapidocr passes ndarrays through unchanged.
        res = self._det(np.ascontiguousarray(image[..., ::-1]))
        boxes = getattr(res, "boxes", None)
        scores = getattr(res, "scores", None)
        if boxes is None or scores is None or len(boxes) == 0:
            return [], []
        keep = [i for i, s in enumerate(scores) if s >= _MIN_DET_SCORE]
        return [np.asarray(boxes[i], np.float32) for i in keep], [float(scores[i]) for i in keep]

    def _read_best(self, crop: np.ndarray) -> tuple[str, float]:
        """Read a line crop, trying cleaner binarisations only when the plain greyscale read is unsure.

        Text over photos (white fill, dark outline) defeats tesseract's global Otsu; masks of the bright or dark
        extremes with background blobs removed read it cleanly. The most confident variant wins.
        """
        best = self._read(_pad(crop, replicate=True))
        if best[1] >= _SURE_CONFIDENCE:
            return best
        for variant in _binarised(crop):
            got = self._read(variant)
            if got[1] > best[1]:
                best = got
                if best[1] >= _SURE_CONFIDENCE:
                    break
        return best

    def _read(self, crop: np.ndarray) -> tuple[str, float]:
        h, w = crop.shape
        data = np.ascontiguousarray(crop).tobytes()  # tesseract does not copy: keep it alive until read
        with self._tess_lock:
            self._tess.SetImageBytes(data, w, h, 1, w)
            self._tess.SetSourceResolution(300)  # line crops have no DPI; avoids tesseract's estimate warning
            text = self._tess.GetUTF8Text()
            conf = float(self._tess.MeanTextConf())
        text = " ".join(text.split())
        return (text, conf) if text else ("", 0.0)


def _quad_area(quad: np.ndarray) -> float:
    return float(cv2.contourArea(quad.astype(np.float32)))


def _line_crop(gray: np.ndarray, quad: np.ndarray) -> np.ndarray | None:
    """Perspective-rectified crop of one detected quadrilateral (tl, tr, br, bl), scaled for tesseract."""
    quad = quad.astype(np.float32)
    w = int(round(max(np.linalg.norm(quad[0] - quad[1]), np.linalg.norm(quad[3] - quad[2]))))
    h = int(round(max(np.linalg.norm(quad[0] - quad[3]), np.linalg.norm(quad[1] - quad[2]))))
    if h < _MIN_BOX_H or w < _MIN_BOX_H:
        return None
    # Scale once inside the warp (cheaper and sharper than warp-then-resize).
    scale = _TARGET_TEXT_H / h if h < _TARGET_TEXT_H else min(1.0, _MAX_CROP_H / h)
    cw, ch = max(1, round(w * scale)), max(1, round(h * scale))
    dst = np.array([[0, 0], [cw, 0], [cw, ch], [0, ch]], np.float32)
    m = cv2.getPerspectiveTransform(quad, dst)
    crop = cv2.warpPerspective(gray, m, (cw, ch), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    if ch >= 1.5 * cw:
        crop = np.ascontiguousarray(np.rot90(crop))  # a tall box is vertical text: read it sideways, as rapidocr does
    return crop


def _pad(img: np.ndarray, replicate: bool) -> np.ndarray:
    """Margin: tesseract drops glyphs that touch the image edge."""
    pad = max(4, img.shape[0] // 6)
    if replicate:
        return cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    return cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=255)


def _binarised(crop: np.ndarray) -> list[np.ndarray]:
    """Black-on-white masks of the likely glyph pixels: Otsu's bright side, its dark side, and the extremes
    (the white fill or black fill of outlined captions). Components touching the crop edge are background:
    the detector's box leaves a margin around real glyphs."""
    otsu, _ = cv2.threshold(crop, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    lo, hi = np.percentile(crop, (10, 90))
    masks = [crop > otsu, crop <= otsu, crop >= min(hi, 230), crop <= max(lo, 25)]
    return [_pad(_drop_edge_components(m), replicate=False) for m in masks]


def _drop_edge_components(mask: np.ndarray) -> np.ndarray:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    h, w = mask.shape
    x, y, cw, ch = stats[:, 0], stats[:, 1], stats[:, 2], stats[:, 3]
    keep = (x > 0) & (y > 0) & (x + cw < w) & (y + ch < h)
    keep[0] = False  # label 0 is the unselected pixels
    return np.where(keep[labels], 0, 255).astype(np.uint8)


def _reading_order(lines: list[OcrLine]) -> list[OcrLine]:
    """Top-to-bottom, then left-to-right within a row (lines whose centres are within half a line height)."""
    if not lines:
        return lines
    by_y = sorted(lines, key=lambda ln: (ln.box[1] + ln.box[3]) / 2)
    rows: list[list[OcrLine]] = [[by_y[0]]]
    for ln in by_y[1:]:
        prev = rows[-1][0]
        tol = 0.5 * min(prev.box[3] - prev.box[1], ln.box[3] - ln.box[1])
        if abs((ln.box[1] + ln.box[3]) / 2 - (prev.box[1] + prev.box[3]) / 2) <= tol:
            rows[-1].append(ln)
        else:
            rows.append([ln])
    return [ln for row in rows for ln in sorted(row, key=lambda ln: ln.box[0])]
