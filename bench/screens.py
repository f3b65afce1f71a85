"""Synthetic web pages and app screens with Korean and English text: benign filler and unrelated queries.

    .venv/bin/python -m bench.screens OUT_DIR --count N [--seed S]

Screenshots of chats, boards, profiles and settings are the kind of picture that false matches cluster on (the
same UI chrome, text lines on a flat background), and a centre's references include such screenshots. Each seed
gives one deterministic screen: a kind (board list, article, chat, settings, profile grid, shop grid), a theme
(light or dark, an accent colour), a language mix and a layout. Disjoint seed ranges keep the filler, the
background bank and the unrelated queries apart (see `bench.filler`).
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONT_DIR = Path("/usr/share/fonts/truetype/nanum")
FONTS = ("NanumGothic.ttf", "NanumGothicBold.ttf", "NanumBarunGothic.ttf", "NanumSquareR.ttf",
         "NanumSquareRoundR.ttf")
KO_WORDS = ("오늘", "학교", "친구", "사진", "영상", "공지", "이벤트", "댓글", "추천", "게시판", "자유", "질문", "답변",
            "여행", "맛집", "날씨", "주말", "회원", "가입", "로그인", "검색", "인기", "최신", "정보", "후기", "모임",
            "메시지", "알림", "설정", "프로필", "좋아요", "공유", "구독", "채널", "방송", "음악", "게임", "쇼핑")
EN_WORDS = ("today", "school", "photo", "video", "notice", "event", "comment", "popular", "board", "free",
            "question", "answer", "travel", "weather", "weekend", "member", "login", "search", "latest", "review",
            "message", "settings", "profile", "like", "share", "subscribe", "channel", "music", "game", "shop")
ACCENTS = ((3, 199, 90), (66, 133, 244), (254, 229, 0), (229, 57, 53), (142, 36, 170), (0, 150, 136),
           (255, 112, 67), (33, 33, 33))

Box = tuple[int, int, int, int]


class Screen:
    def __init__(self, rng: random.Random, size: tuple[int, int]) -> None:
        self.rng = rng
        self.dark = rng.random() < 0.3
        self.accent = rng.choice(ACCENTS)
        self.background = (24, 24, 28) if self.dark else rng.choice(((255, 255, 255), (248, 249, 250), (242, 242, 247)))
        self.ink = (230, 230, 230) if self.dark else (30, 30, 30)
        self.muted = (140, 140, 150)
        self.korean = rng.random()  # share of Korean words
        self.image = Image.new("RGB", size, self.background)
        self.draw = ImageDraw.Draw(self.image)
        self.font_name = rng.choice(FONTS)

    def font(self, size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
        name = "NanumGothicBold.ttf" if bold else self.font_name
        path = FONT_DIR / name
        return ImageFont.truetype(str(path), size) if path.exists() else ImageFont.load_default(size)

    def words(self, low: int, high: int) -> str:
        count = self.rng.randint(low, high)
        return " ".join(self.rng.choice(KO_WORDS if self.rng.random() < self.korean else EN_WORDS)
                        for _ in range(count))

    def text(self, xy: tuple[int, int], text: str, size: int, colour: tuple[int, int, int] | None = None,
             bold: bool = False) -> None:
        self.draw.text(xy, text, font=self.font(size, bold), fill=colour or self.ink)

    def picture(self, box: Box) -> None:
        """A thumbnail: a gradient with a few shapes (no filler image, so filler and queries stay apart)."""
        x0, y0, x1, y1 = box
        a, b = self.rng.choice(ACCENTS), tuple(self.rng.randint(0, 255) for _ in range(3))
        steps = max(1, y1 - y0)
        for i in range(0, steps, 2):
            t = i / steps
            colour = tuple(round(a[c] * (1 - t) + b[c] * t) for c in range(3))
            self.draw.rectangle((x0, y0 + i, x1, min(y1, y0 + i + 2)), fill=colour)
        for _ in range(self.rng.randint(1, 4)):
            w, h = max(4, (x1 - x0) // 3), max(4, (y1 - y0) // 3)
            cx, cy = self.rng.randint(x0, max(x0, x1 - w)), self.rng.randint(y0, max(y0, y1 - h))
            shape = self.draw.ellipse if self.rng.random() < 0.5 else self.draw.rectangle
            shape((cx, cy, cx + w, cy + h), fill=tuple(self.rng.randint(0, 255) for _ in range(3)))

    def status_bar(self, height: int) -> int:
        width = self.image.width
        self.draw.rectangle((0, 0, width, height), fill=self.accent if self.rng.random() < 0.3 else self.background)
        size = height * 6 // 10
        self.text((12, (height - size) // 2), f"{self.rng.randint(0, 23):02d}:{self.rng.randint(0, 59):02d}", size)
        for i in range(3):
            self.draw.rectangle((width - 20 - i * 18, height // 3, width - 8 - i * 18, height * 2 // 3),
                                fill=self.ink)
        return height

    def browser_bar(self) -> int:
        width = self.image.width
        grey = (53, 54, 58) if self.dark else (222, 225, 230)
        self.draw.rectangle((0, 0, width, 70), fill=grey)
        self.draw.rounded_rectangle((90, 18, width - 90, 52), 16, fill=self.background)
        suffix = self.rng.choice(("com", "kr", "net", "co.kr"))
        host = f"{self.rng.choice(('www', 'm', 'bbs', 'cafe', 'gall'))}.{self.words(1, 1)}.{suffix}"
        self.text((110, 25), f"https://{host}/{self.words(1, 1)}?no={self.rng.randint(1, 99999)}", 16)
        for i in range(3):
            self.draw.ellipse((14 + i * 22, 28, 28 + i * 22, 42), fill=self.muted)
        return 70


def board(screen: Screen) -> None:
    rng, width = screen.rng, screen.image.width
    y = screen.browser_bar()
    screen.draw.rectangle((0, y, width, y + 60), fill=screen.accent)
    screen.text((24, y + 14), screen.words(1, 3), 28, (255, 255, 255), bold=True)
    y += 80
    for x in range(24, width - 100, 110):
        screen.text((x, y), screen.words(1, 1), 16, screen.muted)
    y += 40
    while y < screen.image.height - 40:
        screen.draw.line((16, y - 6, width - 16, y - 6), fill=screen.muted, width=1)
        screen.text((24, y), str(rng.randint(1000, 99999)), 15, screen.muted)
        screen.text((110, y), screen.words(3, 9) + (f" [{rng.randint(1, 99)}]" if rng.random() < 0.5 else ""), 17)
        screen.text((width - 200, y), f"{rng.randint(1, 12):02d}.{rng.randint(1, 28):02d}  {rng.randint(1, 9999)}",
                    15, screen.muted)
        y += rng.randint(30, 42)


def article(screen: Screen) -> None:
    rng, width = screen.rng, screen.image.width
    y = screen.browser_bar() + 30
    screen.text((40, y), screen.words(3, 7), 32, bold=True)
    y += 60
    screen.text((40, y), f"{screen.words(1, 2)} · 2026.{rng.randint(1, 12):02d}.{rng.randint(1, 28):02d}", 16,
                screen.muted)
    y += 40
    while y < screen.image.height - 40:
        if rng.random() < 0.2:
            h = rng.randint(120, 260)
            screen.picture((40, y, min(width - 40, 40 + h * 4 // 3), y + h))
            y += h + 20
            continue
        for _ in range(rng.randint(2, 6)):
            screen.text((40, y), screen.words(6, 14), 18)
            y += 28
        y += 16


def chat(screen: Screen) -> None:
    rng, width = screen.rng, screen.image.width
    y = screen.status_bar(44)
    screen.draw.rectangle((0, y, width, y + 64), fill=screen.background)
    screen.draw.ellipse((16, y + 12, 56, y + 52), fill=screen.accent)
    screen.text((70, y + 20), screen.words(1, 2), 22, bold=True)
    y += 80
    bubble_mine = screen.accent if rng.random() < 0.7 else (254, 229, 0)
    bubble_theirs = (58, 58, 60) if screen.dark else (235, 235, 240)
    while y < screen.image.height - 130:
        mine = rng.random() < 0.5
        text = screen.words(1, 6)
        w = min(width - 110, 24 + len(text) * 11)
        h = 44 if rng.random() < 0.8 else 84
        x = width - w - 16 if mine else 64
        if not mine:
            screen.draw.ellipse((12, y, 52, y + 40), fill=tuple(rng.randint(60, 220) for _ in range(3)))
        if rng.random() < 0.1:
            screen.picture((x, y, x + 180, y + 140))
            y += 156
            continue
        screen.draw.rounded_rectangle((x, y, x + w, y + h), 16, fill=bubble_mine if mine else bubble_theirs)
        screen.text((x + 12, y + 12), text, 17, (20, 20, 20) if mine else screen.ink)
        screen.text((x - 60 if mine else x + w + 6, y + h - 18), f"오후 {rng.randint(1, 12)}:{rng.randint(0, 59):02d}",
                    12, screen.muted)
        y += h + rng.randint(10, 24)
    bottom = screen.image.height - 70
    screen.draw.rectangle((0, bottom, width, screen.image.height), fill=bubble_theirs)
    screen.draw.rounded_rectangle((60, bottom + 14, width - 70, bottom + 54), 20, fill=screen.background)


def settings(screen: Screen) -> None:
    rng, width = screen.rng, screen.image.width
    y = screen.status_bar(44) + 10
    screen.text((20, y), screen.words(1, 2), 30, bold=True)
    y += 60
    while y < screen.image.height - 60:
        screen.draw.rounded_rectangle((20, y + 6, 52, y + 38), 8, fill=rng.choice(ACCENTS))
        screen.text((68, y + 12), screen.words(1, 3), 19)
        if rng.random() < 0.5:
            on = rng.random() < 0.5
            screen.draw.rounded_rectangle((width - 80, y + 10, width - 28, y + 38), 14,
                                          fill=screen.accent if on else screen.muted)
            knob = width - 54 if on else width - 80
            screen.draw.ellipse((knob + 2, y + 12, knob + 26, y + 36), fill=(255, 255, 255))
        else:
            screen.text((width - 60, y + 12), ">", 19, screen.muted)
        screen.draw.line((68, y + 48, width, y + 48), fill=screen.muted)
        y += 56


def profile_grid(screen: Screen) -> None:
    rng, width = screen.rng, screen.image.width
    y = screen.status_bar(44) + 16
    screen.draw.ellipse((20, y, 110, y + 90), fill=tuple(rng.randint(40, 220) for _ in range(3)))
    for i in range(3):
        screen.text((150 + i * 90, y + 20), str(rng.randint(0, 9999)), 20, bold=True)
        screen.text((150 + i * 90, y + 50), screen.words(1, 1), 14, screen.muted)
    y += 110
    screen.text((20, y), "@" + screen.words(1, 1).replace(" ", "_") + str(rng.randint(1, 999)), 18, bold=True)
    screen.text((20, y + 28), screen.words(3, 8), 15)
    y += 70
    side = (width - 4) // 3
    while y < screen.image.height:
        for col in range(3):
            screen.picture((col * (side + 2), y, col * (side + 2) + side, y + side))
        y += side + 2


def shop_grid(screen: Screen) -> None:
    rng, width = screen.rng, screen.image.width
    y = screen.browser_bar() + 16
    screen.text((24, y), screen.words(1, 2), 26, screen.accent, bold=True)
    y += 50
    columns = rng.choice((3, 4, 5))
    side = (width - 24 * (columns + 1)) // columns
    while y < screen.image.height - 60:
        for col in range(columns):
            x = 24 + col * (side + 24)
            screen.picture((x, y, x + side, y + side))
            screen.text((x, y + side + 6), screen.words(1, 3), 14)
            screen.text((x, y + side + 26), f"{rng.randint(1, 999) * 100:,}원", 15, bold=True)
        y += side + 60


KINDS: dict[str, tuple[Callable[[Screen], None], tuple[int, int]]] = {
    "board": (board, (1280, 800)),
    "article": (article, (1024, 1280)),
    "chat": (chat, (390, 844)),
    "settings": (settings, (390, 844)),
    "profile": (profile_grid, (390, 844)),
    "shop": (shop_grid, (1280, 900)),
}


def screen(seed: int) -> tuple[str, Image.Image]:
    """One deterministic synthetic screen for `seed`: its kind and its picture."""
    rng = random.Random(f"screen-{seed}")
    kind = rng.choice(sorted(KINDS))
    draw_kind, (width, height) = KINDS[kind]
    scale = rng.uniform(0.85, 1.15)
    page = Screen(rng, (round(width * scale), round(height * scale)))
    draw_kind(page)
    return kind, page.image


def write(out: Path, seeds: range, prefix: str) -> list[dict]:
    """Screens for `seeds` as JPEG q88 files under out/images; returns manifest entries."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    entries = []
    for seed in seeds:
        kind, image = screen(seed)
        file = f"images/{prefix}{seed:06d}.jpg"
        image.save(out / file, "JPEG", quality=88)
        entries.append({"file": file, "source": f"screens:{kind}", "orig": f"seed {seed}", "size": image.size})
    return entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    args = parser.parse_args()
    entries = write(args.out, range(args.seed, args.seed + args.count), "s")
    (args.out / "manifest.json").write_text(json.dumps({"images": entries}, indent=0))
    print(f"{len(entries)} screens -> {args.out}")


if __name__ == "__main__":
    main()
