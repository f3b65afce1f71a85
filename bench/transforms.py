"""What uploaders do to media so hashes miss it, as reproducible functions (PIL in, PIL out).

Shared by the tests and bench/accuracy.py. Seeded: the same call gives the same image.
"""

from __future__ import annotations

import io
import os
import random
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

# The benign dev corpus sits beside the checkout (../shared/corpus/dev) unless JIWOOM_CORPUS says otherwise.
CORPUS = Path(os.environ.get("JIWOOM_CORPUS", Path(__file__).resolve().parents[2] / "shared" / "corpus" / "dev"))
NANUM_FONT = Path("/usr/share/fonts/truetype/nanum/NanumGothicBold.ttf")


def load(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def encode(image: Image.Image, fmt: str = "JPEG", quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def resize(image: Image.Image, scale: float = 0.5) -> Image.Image:
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.LANCZOS)


def jpeg(image: Image.Image, quality: int = 30) -> Image.Image:
    return load(io.BytesIO(encode(image, "JPEG", quality)))  # type: ignore[arg-type]


def crop(image: Image.Image, keep: float = 0.8, seed: int = 0) -> Image.Image:
    """Keep `keep` of each side (80 % crop), at a seeded position."""
    rng = random.Random(seed)
    width, height = round(image.width * keep), round(image.height * keep)
    left, top = rng.randint(0, image.width - width), rng.randint(0, image.height - height)
    return image.crop((left, top, left + width, top + height))


def flip(image: Image.Image) -> Image.Image:
    return ImageOps.mirror(image)


def grayscale(image: Image.Image) -> Image.Image:
    return ImageOps.grayscale(image).convert("RGB")


def colour(image: Image.Image, saturation: float = 1.6, brightness: float = 1.15) -> Image.Image:
    return ImageEnhance.Brightness(ImageEnhance.Color(image).enhance(saturation)).enhance(brightness)


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.truetype(str(NANUM_FONT), size) if NANUM_FONT.exists() else ImageFont.load_default(size)


def text_overlay(image: Image.Image, text: str = "유출 영상 FULL VIDEO 2026", seed: int = 0) -> Image.Image:
    """A caption bar across the bottom plus a watermark line over the picture."""
    rng = random.Random(seed)
    out = image.copy()
    draw = ImageDraw.Draw(out)
    size = max(12, image.height // 12)
    draw.rectangle((0, image.height - size * 1.6, image.width, image.height), fill=(0, 0, 0))
    draw.text((size // 2, image.height - size * 1.4), text, font=font(size), fill=(255, 255, 0))
    y = rng.randint(image.height // 5, image.height // 2)
    draw.text((image.width // 8, y), "@channel_" + str(rng.randint(100, 999)), font=font(size), fill=(255, 255, 255),
              stroke_width=2, stroke_fill=(0, 0, 0))
    return out


def border(image: Image.Image, fraction: float = 0.12, fill: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    """Letterbox: bars above and below, as a re-encoded 16:9 video frame would have."""
    pad = round(image.height * fraction)
    return ImageOps.expand(image, border=(0, pad, 0, pad), fill=fill)


def paste_small(image: Image.Image, area: float = 0.25, seed: int = 0,
                background: Image.Image | None = None) -> Image.Image:
    """The reference pasted at `area` of a larger page (a screenshot, a collage)."""
    rng = random.Random(seed)
    side = area**0.5
    canvas_w, canvas_h = round(image.width / side), round(image.height / side)
    if background is None:
        canvas = Image.new("RGB", (canvas_w, canvas_h), (245, 245, 245))
        draw = ImageDraw.Draw(canvas)
        for row in range(0, canvas_h, max(8, canvas_h // 20)):  # lines of "page text"
            draw.rectangle((10, row + 2, rng.randint(canvas_w // 3, canvas_w - 10), row + 6), fill=(90, 90, 90))
    else:
        canvas = background.resize((canvas_w, canvas_h))
    canvas.paste(image, (rng.randint(0, canvas_w - image.width), rng.randint(0, canvas_h - image.height)))
    return canvas


def rotate(image: Image.Image, degrees: float = 6.0, seed: int = 0) -> Image.Image:
    """A few degrees either way, the corners filled black, as a re-photographed or straightened upload."""
    angle = degrees if random.Random(seed).random() < 0.5 else -degrees
    return image.rotate(angle, resample=Image.BICUBIC, expand=True, fillcolor=(0, 0, 0))


def stretch(image: Image.Image, factor: float = 1.3) -> Image.Image:
    """One side scaled more than the other (a wrong aspect ratio)."""
    return image.resize((round(image.width * factor), image.height), Image.LANCZOS)


def screenshot(image: Image.Image, seed: int = 0) -> Image.Image:
    """The picture inside a screenshot of a synthetic chat, board or profile page (bench.screens), at about half
    the screen's width: a copy shared in a messenger and screenshotted."""
    from bench.screens import screen

    _, page = screen(7_000_000 + seed)  # a seed range of its own, apart from filler and unrelated screens
    rng = random.Random(seed)
    side = rng.uniform(0.5, 0.8) * page.width
    scale = min(side / image.width, 0.6 * page.height / image.height)
    picture = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.LANCZOS)
    top = rng.randint(page.height // 8, max(page.height // 8, page.height - picture.height - page.height // 10))
    left = rng.randint(0, max(0, page.width - picture.width))
    page.paste(picture, (left, top))
    return page


TRANSFORMS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "resize": resize,
    "jpeg_q30": jpeg,
    "crop_80": crop,
    "text_overlay": text_overlay,
    "flip": flip,
    "grayscale": grayscale,
    "colour": colour,
    "border": border,
    "paste_25": paste_small,
    "rotate": rotate,
    "stretch": stretch,
    "screenshot": screenshot,
}
