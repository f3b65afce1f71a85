"""Two realistic boards on one loopback `FixtureSite`, with planted copies of dev-corpus references and hostile
pages: what the crawler's acceptance test and its benchmark crawl.

- A Korean community board in gnuboard 5 markup under ``/bbs/``: list pages ``board.php?bo_table=free&page=N``,
  post pages ``board.php?bo_table=free&wr_id=N``, files under ``/data/file/free/``. Times are KST as its skin
  prints them: "12분 전" / "3시간 전" for recent posts, "14:03" (today) or "11-20" in the list and
  "26-11-20 14:03" on older posts' pages.
- An English forum in phpBB 3.3 (prosilver) markup under ``/forum/``: ``viewforum.php?f=2&start=N``,
  ``viewtopic.php?t=N`` (one long topic has a second page), attachments at ``download/file.php?id=N``, every post
  time in ``<time datetime>`` (UTC).

About a third of the posts carry a transformed copy of a reference (resize, crop, caption bar, letterbox, JPEG
q30, a screenshot, a collage), one Korean post a clip cut from a reference video, the rest other corpus photos or
no media. Hostile posts sit in the lists like any other. Site chrome (logos, icons, avatars) is there too, and
is not content. Everything is deterministic from ``seed``; the absolute URLs carry the site's port.

    with FixtureSite() as site:
        planted = plant_boards(site, CORPUS, now=datetime.now(UTC))
"""

from __future__ import annotations

import functools
import html
import io
import math
import random
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageOps

from bench import transforms as tf
from bench.fixture_site import FixtureSite
from jiwoom.shared.times import KST

PRIVATE = "http://10.0.0.1"  # a private address: the crawler must refuse it, never connect
HUGE_BYTES = 200 * 1024 * 1024
KO_ROWS = 10  # gnuboard bo_page_rows
EN_TOPICS = 10  # phpBB topics_per_page
EN_POSTS = 10  # phpBB posts_per_page
MANY_LINKS = 5000
LAZY_PLACEHOLDER = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"

# Photos with no near-duplicate elsewhere in the corpus and no flat vector art (bench/RESULTS.md: those are
# where the matcher's few false pairs come from): stand-ins for victims' reference media.
REFERENCE_POOL = tuple(f"img_{i:04d}.jpg" for i in (
    73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 128, 129, 133, 136, 138, 139, 140, 141, 142, 145,
    225, 226, 227, 228, 232, 236, 238, 242, 247, 249, 262, 263, 264))
# Ordinary photos people post (Scratch backdrops, OpenCV samples), never references.
DISTRACTOR_POOL = tuple(f"img_{i:04d}.jpg" for i in (
    0, 1, 2, 3, 4, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 33, 34,
    35, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 53, 54, 55, 59, 60, 61,
    169, 170, 176, 177, 185, 189, 200, 202, 218, 219))
VIDEO_POOL = ("vid_002.mp4", "vid_003.mp4", "vid_000.mp4")  # not vid_004/005: those two are one clip
TRANSFORMS = ("resize", "crop_80", "text_overlay", "border", "jpeg_q30", "screenshot", "collage")

KO_NICKS = ("익명123", "ㅇㅇ", "지나가던행인", "밤하늘별", "고양이집사", "초코우유", "산책러", "푸른바다",
            "새벽감성", "동네형", "kimdev", "사진쟁이", "여름바람", "민트초코")
KO_UPLOADER = "텔레방장"  # posts most of the Korean copies: what author-frequency reports should surface
KO_COPY_TITLES = ("이 사람 누군지 아시는 분?", "인스타에서 돌던 사진", "지난번 그 사진 고화질 버전",
                  "텔레방에서 퍼옴", "원본 구합니다 ㅠㅠ", "삭제되기 전에 저장함", "단톡방에 돌던 거",
                  "이거 진짜임? 퍼온 거", "예전 글 재업", "아는 사람만 아는 사진")
KO_OBFUSCATED = ("야 동 유출 ㅎㄷㄷ", "ㅇㅑ동 학 교 영상 원본", "몰*카 유*출본 풀버전")
KO_PLAIN_TITLES = ("오늘 날씨 진짜 좋네요", "점심 뭐 드셨어요?", "주말에 등산 다녀왔습니다", "강아지 산책 사진",
                   "이 카페 분위기 어때요", "여행 사진 몇 장 올려요", "퇴근하고 싶다", "노트북 추천 부탁드립니다",
                   "요즘 읽는 책", "동네 맛집 공유", "자전거 타기 좋은 코스", "비 오는 날 사진", "이사 준비 중입니다",
                   "운동 3개월 차 후기", "가을 단풍 구경", "새로 산 카메라로 찍어봄", "고양이가 키보드 위에서 잠듦",
                   "야식 메뉴 골라주세요", "출근길 풍경", "오랜만에 글 남깁니다")
KO_COPY_TEXT = ("출처는 모름. 삭제되기 전에 올림", "원본 있는 사람 쪽지 주세요", "텔레방 링크는 댓글로",
                "저장해 두세요 곧 지워짐", "화질 좋은 걸로 다시 올립니다")
KO_PLAIN_TEXT = ("날이 좋아서 산책 다녀왔어요.", "다들 좋은 하루 보내세요!", "사진 몇 장 찍어 왔습니다.",
                 "혹시 비슷한 경험 있으신 분 계신가요?", "오늘은 일찍 자야겠네요.", "추천 부탁드립니다 ㅎㅎ")
KO_COMMENTS_SUS = ("출처좀", "ㄷㄷ", "원본 있으신 분", "이거 불법촬영물 아닌가요? 신고합니다", "링크 죽었네요")
KO_COMMENTS = ("잘 보고 갑니다", "좋네요 ㅎㅎ", "저도 가보고 싶어요", "ㅋㅋㅋㅋ", "사진 잘 찍으시네요")

EN_USERS = (("alice_w", 52), ("bobby92", 17), ("nightowl", 88), ("mod_kate", 2), ("greenfern", 64),
            ("pixelpusher", 133), ("lurker42", 205), ("sam.t", 76), ("QuietRiver", 149))
EN_UPLOADER = ("throwaway_8812", 301)
EN_COPY_TITLES = ("Anyone know who this is?", "found this on a telegram channel",
                  "HQ version of the pic from last week", "reupload, the old thread got nuked",
                  "more from the same account", "is this the one everyone is talking about",
                  "saved it before it was deleted", "collection thread (part 2)", "does anyone have the original?")
EN_OBFUSCATED = ("l3aked p1cs from school (full)",)
EN_PLAIN_TITLES = ("Best budget mechanical keyboard?", "Weekend hiking photos", "What are you reading this month?",
                   "My cat discovered the printer", "Sourdough attempt #4", "Rainy day in the city",
                   "Favourite podcast episodes", "New lens, first shots", "Garden update, autumn edition",
                   "Trip report: coastal road", "Help choosing a monitor", "Random photo thread",
                   "Working from home setups", "Board games for two players", "Recommend me a movie")
EN_COPY_TEXT = ("Saw this posted elsewhere, reposting before it disappears.", "Full set is in the channel.",
                "Anyone recognise her?", "Better quality than the last thread.")
EN_REPLIES = ("Thanks for sharing!", "Nice one.", "+1, same here.", "Reported. This should not be here.",
              "Source?", "Great shots, what camera?", "lol", "Agreed with the above.", "Bump.")


@dataclass(frozen=True)
class PlantedCopy:
    reference: str  # its key in Planted.references
    page_url: str  # the post's page, absolute, as a crawler resolves the list's link
    media_url: str  # the copy's file, absolute (the largest srcset candidate where there is a srcset)
    title: str  # the post's title (the topic's title on the forum)
    author: str
    posted_at: datetime  # aware UTC: what the page's time means at `now` (KST wall clock on the Korean board)
    transform: str
    board: str  # "ko" or "en"
    kind: str  # "image" or "video"
    posted_text: str  # the time as the page prints it (on the forum: its <time datetime>)
    also_at: tuple[str, ...] = ()  # other URLs on the page serving a rendition of the same copy (srcset thumbnail)


@dataclass
class Planted:
    references: dict[str, Path]  # what a test registers as reference media (name -> corpus file), the video too
    copies: list[PlantedCopy]
    hostile: dict[str, str]  # name -> absolute URL
    seeds: list[str]  # the boards' first list pages
    private_urls: list[str]  # on the pages, or where a redirect leads: never to be contacted
    pages: int  # list, post and topic pages a full crawl of the boards fetches (garbage included, not the hang)
    media: int  # distinct content media files it fetches (not the 200 MB one, the private ones or site chrome)
    obfuscated_titles: list[str]
    page_urls: list[str] = field(default_factory=list)  # the `pages`, absolute
    media_urls: list[str] = field(default_factory=list)  # the `media`, absolute
    chrome_urls: list[str] = field(default_factory=list)  # logos, icons, avatars: images that are not content


# --- media ----------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=128)
def _decoded(path: str) -> Image.Image:
    return tf.load(Path(path))


def _fit_within(image: Image.Image, side: int) -> Image.Image:
    scale = side / max(image.size)
    return tf.resize(image, scale) if scale < 1 else image


def _collage(image: Image.Image, others: list[Image.Image], seed: int) -> Image.Image:
    """A 2x2 "모음" grid: the reference in one cell (a quarter of the area), other photos in the rest."""
    w, h = image.width // 2, image.height // 2
    canvas = Image.new("RGB", (2 * w + 6, 2 * h + 6), (255, 255, 255))
    cells = [image.resize((w, h), Image.LANCZOS)] + [ImageOps.fit(o, (w, h)) for o in others[:3]]
    for cell, slot in zip(cells, random.Random(seed).sample(range(4), len(cells)), strict=True):
        canvas.paste(cell, (2 + (slot % 2) * (w + 2), 2 + (slot // 2) * (h + 2)))
    return canvas


@functools.lru_cache(maxsize=256)
def _copy_bytes(path: str, transform: str, seed: int, others: tuple[str, ...] = ()) -> bytes:
    """A transformed copy of the reference at `path`, as the JPEG an uploader posts (cached: tests plant often)."""
    image = _decoded(path)
    match transform:
        case "resize":
            out = tf.resize(image, 0.5)
        case "crop_80":
            out = tf.crop(image, 0.8, seed=seed)
        case "text_overlay":
            out = tf.text_overlay(image, "유출 원본 FULL 2026 무단배포", seed=seed)
        case "border":
            out = tf.border(image)
        case "jpeg_q30":
            return tf.encode(image, quality=30)
        case "screenshot":  # a phone-sized picture pasted into a page of text lines
            out = tf.paste_small(_fit_within(image, 720), area=0.25, seed=seed)
        case "collage":
            out = _collage(_fit_within(image, 960), [_decoded(o) for o in others], seed)
        case _:
            raise ValueError(f"unknown transform {transform!r}")
    return tf.encode(out, quality=88)


@functools.lru_cache(maxsize=64)
def _thumbnail(data: bytes) -> bytes:
    """The half-size rendition a board serves beside the full file (srcset)."""
    with Image.open(io.BytesIO(data)) as image:
        return tf.encode(tf.resize(image.convert("RGB"), 0.5), quality=80)


@functools.lru_cache(maxsize=4)
def _clip(path: str, start_s: float, seconds: float, width: int) -> bytes:
    """`seconds` of the video from `start_s`, scaled to `width`, re-encoded as H.264 in MP4 (no audio)."""
    frames: list[np.ndarray] = []
    with av.open(path) as source:
        stream = source.streams.video[0]
        rate = stream.average_rate or Fraction(25)
        for frame in source.decode(stream):
            at = float(frame.time or 0.0)
            if at < start_s:
                continue
            if at >= start_s + seconds:
                break
            height = round(frame.height * width / frame.width / 2) * 2  # yuv420p needs even sides
            frames.append(frame.to_ndarray(format="rgb24", width=width, height=height))
    if not frames:
        raise ValueError(f"{path} has no frames in [{start_s}, {start_s + seconds})")
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=rate, options={"crf": "26", "preset": "veryfast"})
        video.height, video.width = frames[0].shape[:2]
        video.pix_fmt = "yuv420p"
        for rgb in frames:
            out.mux(video.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(video.encode())
    return buffer.getvalue()


@functools.lru_cache(maxsize=32)
def _icon(width: int, height: int, colour: tuple[int, int, int], label: str = "", fmt: str = "PNG") -> bytes:
    """A small site graphic (logo, SNS icon, avatar): flat colour with a label, nothing a matcher should care about."""
    image = Image.new("RGB", (width, height), colour)
    if label:
        ImageDraw.Draw(image).text((4, max(0, height // 2 - 8)), label, fill=(255, 255, 255),
                                   font=tf.font(max(8, min(16, height - 8))))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


# --- building -------------------------------------------------------------------------------------------------------


@dataclass
class _Build:
    site: FixtureSite
    rng: random.Random
    now: datetime  # UTC
    corpus: Path
    refs: list[Path]
    distractors: list[Path]
    references: dict[str, Path] = field(default_factory=dict)
    copies: list[PlantedCopy] = field(default_factory=list)
    hostile: dict[str, str] = field(default_factory=dict)
    pages: list[str] = field(default_factory=list)
    media: list[str] = field(default_factory=list)
    chrome: list[str] = field(default_factory=list)
    next_ref: int = 0
    next_transform: int = 0
    next_distractor: int = 0
    copy_bytes: dict[str, bytes] = field(default_factory=dict)  # media URL -> planted bytes

    def url(self, path: str) -> str:
        return self.site.url(path)

    def page(self, path: str, body: bytes) -> str:
        self.site.put(path, body)
        self.pages.append(self.url(path))
        return self.url(path)

    def file(self, path: str, data: bytes, content_type: str = "image/jpeg",
             headers: dict[str, str] | None = None) -> str:
        self.site.put(path, data, content_type=content_type, headers=headers)
        if self.url(path) not in self.media:
            self.media.append(self.url(path))
        return self.url(path)

    def icon(self, path: str, data: bytes, content_type: str = "image/png") -> str:
        self.site.put(path, data, content_type=content_type, headers={"Cache-Control": "max-age=86400"})
        if self.url(path) not in self.chrome:
            self.chrome.append(self.url(path))
        return path

    def planted_image(self) -> tuple[str, str, bytes]:
        """The next reference under the next transform: (reference name, transform, JPEG bytes)."""
        ref = self.refs[self.next_ref % len(self.refs)]
        transform = TRANSFORMS[self.next_transform % len(TRANSFORMS)]
        self.next_ref += 1
        self.next_transform += 1
        others = tuple(str(self.distractor()) for _ in range(3)) if transform == "collage" else ()
        self.references[ref.stem] = ref
        return ref.stem, transform, _copy_bytes(str(ref), transform, self.rng.randrange(1 << 30), others)

    def distractor(self) -> Path:
        path = self.distractors[self.next_distractor % len(self.distractors)]
        self.next_distractor += 1
        return path


def _floor_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def _timeline(b: _Build, count: int) -> list[tuple[str, datetime]]:
    """`count` post times, newest first: one minutes old and three hours old (shown relative, so exactly `now` less
    that), then minute-aligned absolute times going back over days."""
    out: list[tuple[str, datetime]] = []
    hours = sorted(b.rng.sample(range(1, 6), 3))
    age = 360  # minutes; relative forms stop at six hours on this skin
    for slot in range(count):
        if slot == 0:
            out.append(("minutes", b.now - timedelta(minutes=b.rng.randint(5, 55))))
        elif slot <= 3:
            out.append(("hours", b.now - timedelta(hours=hours[slot - 1])))
        else:
            age += b.rng.randint(25, 300)
            out.append(("absolute", _floor_minute(b.now) - timedelta(minutes=age)))
    return out


def _gnuboard_name(rng: random.Random, ext: str) -> str:
    """An uploaded file's name as gnuboard stores it: a number, a random word, a hash."""
    word = "".join(rng.choices(string.ascii_letters + string.digits, k=8))
    return f"{rng.randrange(10**9, 4 * 10**9)}_{word}_{rng.getrandbits(160):040x}.{ext}"


def _pick(pool: tuple[str, ...], used: dict[tuple[str, ...], int]) -> str:
    """The next title from `pool`, numbered when the pool comes round again so titles stay unique."""
    n = used.get(pool, 0)
    used[pool] = n + 1
    return f"{pool[n % len(pool)]} ({n // len(pool) + 1})" if n >= len(pool) else pool[n % len(pool)]


# --- the Korean board (gnuboard 5) -----------------------------------------------------------------------------------

_KO_CSS = "/theme/basic/css/default.css"


@dataclass
class _KoPost:
    wr_id: int
    role: str
    style: str
    posted: datetime
    title: str = ""
    author: str = ""
    body: str = ""  # the inner HTML of #bo_v_con
    text: str = ""  # its first line (og:description)
    og_image: str = ""
    href: str = ""  # the list's link (absolute)
    path: str = ""  # the route of its page
    comments: list[tuple[str, str, datetime]] = field(default_factory=list)
    views: int = 0
    notice: bool = False


def _ko_list_time(post: _KoPost, now: datetime) -> str:
    if post.style != "absolute":
        return _ko_post_time(post, now)
    local = post.posted.astimezone(KST)
    return local.strftime("%H:%M") if local.date() == now.astimezone(KST).date() else local.strftime("%m-%d")


def _ko_post_time(post: _KoPost, now: datetime) -> str:
    if post.style == "minutes":
        return f"{round((now - post.posted).total_seconds() / 60)}분 전"
    if post.style == "hours":
        return f"{round((now - post.posted).total_seconds() / 3600)}시간 전"
    return post.posted.astimezone(KST).strftime("%y-%m-%d %H:%M")


def _ko_img(src: str, mode: str, thumb: str = "", width: int = 0) -> str:
    esc = html.escape
    if mode == "lazy":  # the real address only in data-src, a 1x1 placeholder in src
        return f'<img src="{LAZY_PLACEHOLDER}" data-src="{esc(src)}" class="lazyload" alt="">'
    if mode == "srcset":
        return (f'<img src="{esc(thumb)}" srcset="{esc(thumb)} {width // 2}w, {esc(src)} {width}w" '
                f'sizes="(max-width: 768px) 100vw, 835px" alt="">')
    return f'<img src="{esc(src)}" alt="" style="max-width:100%">'


def _ko_chrome(b: _Build) -> dict[str, str]:
    return {
        "logo": b.icon("/theme/basic/img/logo.png", _icon(180, 44, (43, 76, 126), "커뮤니티")),
        "ft_logo": b.icon("/theme/basic/img/ft_logo.png", _icon(120, 30, (90, 90, 90), "community")),
        "kakao": b.icon("/theme/basic/img/sns_kakao.png", _icon(24, 24, (250, 225, 0))),
        "twitter": b.icon("/theme/basic/img/sns_twitter.png", _icon(24, 24, (29, 161, 242))),
        "search": b.icon("/theme/basic/img/icon_search.png", _icon(20, 20, (60, 60, 60))),
        "profile": b.icon("/img/no_profile.gif", _icon(60, 60, (200, 200, 200), fmt="GIF"), "image/gif"),
    }


def _ko_layout(b: _Build, chrome: dict[str, str], popular: list[_KoPost], title: str, content: str,
               og_image: str = "", description: str = "") -> bytes:
    esc = html.escape
    board_url = b.url("/bbs/board.php?bo_table=free")
    popular_items = "\n".join(f'          <li><a href="{esc(p.href)}">{esc(p.title)}</a></li>' for p in popular)
    og = (f'  <meta property="og:image" content="{esc(og_image or b.url(chrome["logo"]))}">\n'
          f'  <meta property="og:description" content="{esc(description)}">\n')
    page = f"""<!doctype html>
<html lang="ko">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width,initial-scale=1.0,minimum-scale=0,maximum-scale=10">
  <meta http-equiv="imagetoolbar" content="no">
  <meta http-equiv="X-UA-Compatible" content="IE=edge">
  <title>{esc(title)} &gt; 자유게시판 | 커뮤니티</title>
  <meta property="og:type" content="website">
  <meta property="og:title" content="{esc(title)}">
{og}  <link rel="stylesheet" href="{_KO_CSS}?ver=191202">
  <script src="/js/jquery-1.12.4.min.js?ver=191202"></script>
  <script>var g5_url = "{b.site.origin}"; var g5_bbs_url = "{b.url("/bbs")}"; var g5_bo_table = "free";</script>
</head>
<body>
<div id="hd">
  <h1 id="hd_h1">{esc(title)} &gt; 자유게시판</h1>
  <div id="skip_to_container"><a href="#container">본문 바로가기</a></div>
  <div id="hd_wrapper">
    <div id="logo"><a href="/"><img src="{chrome["logo"]}" alt="커뮤니티"></a></div>
    <div class="hd_sch_wr">
      <form name="fsearchbox" method="get" action="/bbs/search.php">
        <input type="text" name="stx" id="sch_stx" maxlength="20" placeholder="검색어를 입력해주십시오">
        <button type="submit" id="sch_submit"><img src="{chrome["search"]}" alt="검색"></button>
      </form>
    </div>
    <ul class="hd_login">
      <li><a href="/bbs/register.php">회원가입</a></li>
      <li><a href="/bbs/login.php">로그인</a></li>
    </ul>
  </div>
  <nav id="gnb">
    <ul id="gnb_1dul">
      <li class="gnb_1dli"><a href="/" class="gnb_1da">홈</a></li>
      <li class="gnb_1dli"><a href="{esc(board_url)}" class="gnb_1da">자유게시판</a></li>
      <li class="gnb_1dli"><a href="/forum/index.php" class="gnb_1da">English forum</a></li>
    </ul>
  </nav>
</div>
<div id="wrapper">
  <div id="container_wr">
    <div id="container">
      <h2 id="container_title"><span title="자유게시판">자유게시판</span></h2>
{content}
    </div>
    <aside id="aside">
      <section class="popular_wr">
        <h2>인기글</h2>
        <ul class="popular_list">
{popular_items}
        </ul>
      </section>
    </aside>
  </div>
</div>
<div id="ft">
  <div id="ft_wr">
    <div id="ft_logo"><img src="{chrome["ft_logo"]}" alt="community"></div>
    <ul class="ft_sns">
      <li><a href="#"><img src="{chrome["kakao"]}" alt="카카오톡"></a></li>
      <li><a href="#"><img src="{chrome["twitter"]}" alt="트위터"></a></li>
    </ul>
    <div id="ft_link">
      <a href="/content/provision.php">이용약관</a> <a href="/content/privacy.php">개인정보처리방침</a>
    </div>
    <div id="ft_copy">Copyright &copy; <b>community.example</b> All rights reserved.</div>
  </div>
</div>
</body>
</html>
"""
    return page.encode("utf-8")


def _ko_list(b: _Build, chrome: dict[str, str], popular: list[_KoPost], notice: _KoPost, posts: list[_KoPost],
             page: int, n_pages: int) -> bytes:
    esc = html.escape
    rows = []
    for number, post in [(0, notice), *((len(posts) - i, p) for i, p in
                                       enumerate(posts) if (i // KO_ROWS) + 1 == page)]:
        num = '<strong class="notice_icon">공지</strong>' if post.notice else str(number)
        comments = f'<span class="cnt_cmt">{len(post.comments)}</span>' if post.comments else ""
        rows.append(f"""      <tr class="{"bo_notice" if post.notice else ""}">
        <td class="td_num2">{num}</td>
        <td class="td_subject" style="padding-left:0px">
          <div class="bo_tit"><a href="{esc(post.href)}">{esc(post.title)}</a> {comments}</div>
        </td>
        <td class="td_name sv_use"><span class="sv_member">{esc(post.author)}</span></td>
        <td class="td_num">{post.views}</td>
        <td class="td_datetime">{esc(_ko_list_time(post, b.now))}</td>
      </tr>""")
    pager = ['<a href="./board.php?bo_table=free&amp;page=1" class="pg_page pg_start">처음</a>'] if page > 1 else []
    for n in range(1, n_pages + 1):
        pager.append(f'<strong class="pg_current">{n}</strong>' if n == page else
                     f'<a href="./board.php?bo_table=free&amp;page={n}" class="pg_page">{n}</a>')
    if page < n_pages:
        pager.append(f'<a href="./board.php?bo_table=free&amp;page={page + 1}" class="pg_page pg_next">다음</a>')
        pager.append(f'<a href="./board.php?bo_table=free&amp;page={n_pages}" class="pg_page pg_end">맨끝</a>')
    content = f"""      <div id="bo_list" style="width:100%">
        <div id="bo_btn_top"><div id="bo_list_total"><span>Total {len(posts)}건</span> {page} 페이지</div></div>
        <form name="fboardlist" id="fboardlist" action="./board_list_update.php" method="post">
        <div class="tbl_head01 tbl_wrap">
          <table>
          <caption>자유게시판 목록</caption>
          <thead><tr><th scope="col">번호</th><th scope="col">제목</th><th scope="col">글쓴이</th>
            <th scope="col">조회</th><th scope="col">날짜</th></tr></thead>
          <tbody>
{chr(10).join(rows)}
          </tbody>
          </table>
        </div>
        </form>
      </div>
      <nav class="pg_wrap"><span class="pg">{" ".join(pager)}</span></nav>"""
    return _ko_layout(b, chrome, popular, "자유게시판", content)


def _ko_view(b: _Build, chrome: dict[str, str], popular: list[_KoPost], post: _KoPost, prev: _KoPost | None,
             nxt: _KoPost | None, extra: str = "") -> bytes:
    esc = html.escape
    comments = "\n".join(
        f"""        <article id="c_{post.wr_id * 10 + i}">
          <header style="z-index:{i}"><span class="sv_member">{esc(who)}</span>
            <span class="bo_vc_hdinfo"><time datetime="{at.astimezone(KST).isoformat()}">"""
        f"""{at.astimezone(KST).strftime("%y-%m-%d %H:%M")}</time></span></header>
          <div class="cmt_contents"><p>{esc(text)}</p></div>
        </article>""" for i, (who, text, at) in enumerate(post.comments))
    neighbours = "".join(
        f'<li class="{cls}"><span class="nb_tit">{label}</span> <a href="{esc(p.href)}">{esc(p.title)}</a></li>'
        for cls, label, p in (("btn_prv", "이전글", prev), ("btn_next", "다음글", nxt)) if p is not None)
    content = f"""      <article id="bo_v" style="width:100%">
        <header>
          <h2 id="bo_v_title"><span class="bo_v_tit">{esc(post.title)}</span></h2>
        </header>
        <section id="bo_v_info">
          <h2>페이지 정보</h2>
          <div class="profile_info">
            <div class="pf_img"><img src="{chrome["profile"]}" alt="profile_image"></div>
            <div class="profile_info_ct">
              <span class="sound_only">작성자</span>
              <strong><span class="sv_member">{esc(post.author)}</span></strong><br>
              <span class="sound_only">댓글</span><strong><a href="#bo_vc"> {len(post.comments)}건</a></strong>
              <span class="sound_only">조회</span><strong>{post.views}회</strong>
              <strong class="if_date"><span class="sound_only">작성일</span> {esc(_ko_post_time(post, b.now))}</strong>
            </div>
          </div>
        </section>
        <section id="bo_v_atc">
          <h2 id="bo_v_atc_title">본문</h2>
          <div id="bo_v_img"></div>
          <div id="bo_v_con">
{post.body}
          </div>
        </section>
{extra}
        <ul class="bo_v_nb">{neighbours}</ul>
        <section id="bo_vc">
          <h2>댓글목록</h2>
{comments or '        <p id="bo_vc_empty">등록된 댓글이 없습니다.</p>'}
        </section>
      </article>"""
    return _ko_layout(b, chrome, popular, post.title, content, post.og_image, post.text)


def _plant_ko(b: _Build, n_posts: int) -> list[str]:
    """The gnuboard board; returns its obfuscated titles."""
    rng, esc = b.rng, html.escape
    n_copy = max(1, n_posts // 3)
    rest = n_posts - n_copy - 1
    roles = ["copy"] * n_copy + ["video"] + ["photos"] * (rest - rest // 2) + ["text"] * (rest // 2)
    roles += ["huge", "truncated", "loop", "hang", "private"]
    rng.shuffle(roles)
    # A planted copy in a "N분 전" slot and in a "N시간 전" slot: the relative forms must be read right.
    for slot in (0, 2):
        if roles[slot] != "copy":
            other = next(i for i, r in enumerate(roles) if r == "copy" and i not in (0, 2))
            roles[slot], roles[other] = roles[other], roles[slot]
    times = _timeline(b, len(roles))
    wr_id, posts = 1000, []
    for role, (style, posted) in zip(reversed(roles), reversed(times), strict=True):  # oldest first: ids grow
        wr_id += rng.randint(1, 4)  # deleted posts leave gaps
        posts.append(_KoPost(wr_id, role, style, posted, views=rng.randint(20, 3000)))
    posts.reverse()  # the list shows newest first
    for post in posts:
        post.path = f"/bbs/board.php?bo_table=free&wr_id={post.wr_id}"
        post.href = b.url(post.path)
    notice = _KoPost(12, "notice", "absolute", _floor_minute(b.now) - timedelta(days=41, minutes=377),
                     title="[공지] 불법촬영물 게시 금지 및 신고 안내", author="운영자", views=9120, notice=True,
                     path="/bbs/board.php?bo_table=free&wr_id=12")
    notice.href = b.url(notice.path)
    notice.text = "불법촬영물, 동의 없이 촬영·유포된 사진과 영상은 올리는 즉시 삭제되고 수사기관에 신고됩니다."
    notice.body = f"            <p>{notice.text}</p>\n            <p>발견하시면 신고 버튼을 눌러 주세요.</p>"

    used: dict[tuple[str, ...], int] = {}
    obfuscated: list[str] = []
    copy_posts = [p for p in posts if p.role == "copy"]
    two_copies = copy_posts[-1]  # one post carries two references
    modes = ["lazy", "srcset"] + [rng.choice(("plain", "plain", "lazy", "srcset")) for _ in copy_posts[2:]]
    for post, mode in zip(copy_posts, modes, strict=True):
        if len(obfuscated) < len(KO_OBFUSCATED) and post is not copy_posts[0]:
            post.title = KO_OBFUSCATED[len(obfuscated)]
            obfuscated.append(post.title)
        else:
            post.title = _pick(KO_COPY_TITLES, used)
        post.author = KO_UPLOADER if rng.random() < 0.6 else rng.choice(KO_NICKS)
        post.text = rng.choice(KO_COPY_TEXT)
        blocks = [f"            <p>{esc(post.text)}</p>"]
        for _ in range(2 if post is two_copies else 1):
            ref, transform, data = b.planted_image()
            name = _gnuboard_name(rng, "jpg")
            media = b.file(f"/data/file/free/{name}", data)
            b.copy_bytes[media] = data
            also: tuple[str, ...] = ()
            with Image.open(io.BytesIO(data)) as image:
                width = image.width
            if mode == "srcset":
                thumb = f"/data/file/free/thumb-{name[:-4]}_{width // 2}x0.jpg"
                also = (b.file(thumb, _thumbnail(data)),)
                blocks.append(f"            <p>{_ko_img(media, mode, also[0], width)}</p>")
            else:
                blocks.append(f"            <p>{_ko_img(media, mode)}</p>")
            post.og_image = post.og_image or media
            b.copies.append(PlantedCopy(ref, post.href, media, post.title, post.author, post.posted, transform, "ko",
                                        "image", _ko_post_time(post, b.now), also))
        post.body = "\n".join(blocks)

    for post in posts:
        if post.role == "video":
            video = next((p for p in (b.corpus / "videos" / v for v in VIDEO_POOL) if p.exists()), None)
            if video is None:
                raise FileNotFoundError(f"none of {VIDEO_POOL} under {b.corpus / 'videos'}")
            data = _clip(str(video), 1.0, 2.5, 480)
            media = b.file(f"/data/file/free/{_gnuboard_name(rng, 'mp4')}", data, "video/mp4")
            post.title, post.author = "영상 원본 (삭제 전에 보세요)", KO_UPLOADER
            post.text = rng.choice(KO_COPY_TEXT)
            post.body = (f"            <p>{esc(post.text)}</p>\n"
                         f'            <video controls preload="metadata" width="480" playsinline>\n'
                         f'              <source src="{esc(media)}" type="video/mp4">\n'
                         f"              브라우저가 video 태그를 지원하지 않습니다.\n"
                         f"            </video>")
            b.references[video.stem] = video
            b.copies.append(PlantedCopy(video.stem, post.href, media, post.title, post.author, post.posted,
                                        "clip_1.0s+2.5s_480w", "ko", "video", _ko_post_time(post, b.now)))
        elif post.role == "photos":
            post.title, post.author = _pick(KO_PLAIN_TITLES, used), rng.choice(KO_NICKS)
            post.text = rng.choice(KO_PLAIN_TEXT)
            blocks = [f"            <p>{esc(post.text)}</p>"]
            for _ in range(rng.randint(1, 3)):
                media = b.file(f"/data/file/free/{_gnuboard_name(rng, 'jpg')}", b.distractor().read_bytes())
                blocks.append(f"            <p>{_ko_img(media, rng.choice(('plain', 'plain', 'lazy')))}</p>")
                post.og_image = post.og_image or media
            post.body = "\n".join(blocks)
        elif post.role == "text":
            post.title, post.author = _pick(KO_PLAIN_TITLES, used), rng.choice(KO_NICKS)
            lines = rng.sample(KO_PLAIN_TEXT, 2)
            post.text, post.body = lines[0], "\n".join(f"            <p>{esc(t)}</p>" for t in lines)
        elif post.role in ("huge", "truncated", "loop", "hang", "private"):
            post.author = rng.choice(KO_NICKS)
        if post.role in ("copy", "video", "photos", "text"):
            pool, lo = (KO_COMMENTS_SUS, 1) if post.role in ("copy", "video") else (KO_COMMENTS, 0)
            for _ in range(rng.randint(lo, 3)):
                at = post.posted + (b.now - post.posted) * rng.random()
                post.comments.append((rng.choice(KO_NICKS), rng.choice(pool), _floor_minute(at)))
            post.comments.sort(key=lambda c: c[2])

    chrome = _ko_chrome(b)
    regular = [p for p in posts if p.role in ("copy", "video", "photos", "text")]
    popular = sorted(rng.sample(regular, min(5, len(regular))), key=lambda p: -p.views)
    for i, post in enumerate(regular):
        nxt, prev = (regular[i - 1] if i else None), (regular[i + 1] if i + 1 < len(regular) else None)
        b.page(post.path, _ko_view(b, chrome, popular, post, prev, nxt))
    b.page(notice.path, _ko_view(b, chrome, popular, notice, None, None))
    _plant_ko_hostile(b, chrome, popular, posts)

    n_pages = math.ceil(len(posts) / KO_ROWS)
    for page in range(1, n_pages + 1):
        b.page(f"/bbs/board.php?bo_table=free&page={page}", _ko_list(b, chrome, popular, notice, posts, page, n_pages))
    # The board's bare address (the menu's link) is page 1 again, as on a real board; not counted twice.
    b.site.put("/bbs/board.php?bo_table=free", _ko_list(b, chrome, popular, notice, posts, 1, n_pages))
    b.site.put("/", _ko_layout(b, chrome, popular, "커뮤니티", "      <p>최신글은 자유게시판에서 확인하세요.</p>"))
    b.site.put("/bbs/login.php", _ko_layout(b, chrome, popular, "로그인", (
        '      <form name="flogin" action="/bbs/login_check.php" method="post"><input type="text" name="mb_id">'
        '<input type="password" name="mb_password"><button type="submit">로그인</button></form>')))
    return obfuscated


def _plant_ko_hostile(b: _Build, chrome: dict[str, str], popular: list[_KoPost], posts: list[_KoPost]) -> None:
    rng, esc = b.rng, html.escape
    by_role = {p.role: p for p in posts}

    post = by_role["huge"]
    post.title = "고화질 원본 (용량 큼)"
    media = f"/data/file/free/{_gnuboard_name(rng, 'jpg')}"
    b.site.put_large(media, HUGE_BYTES, content_type="image/jpeg")
    post.body = f"            <p>원본 그대로 올립니다.</p>\n            <p>{_ko_img(media, 'plain')}</p>"
    b.hostile["huge_image_page"] = b.page(post.path, _ko_view(b, chrome, popular, post, None, None))
    b.hostile["huge_image"] = b.url(media)

    post = by_role["truncated"]
    post.title = "사진이 깨져서 보이네요"
    whole = b.distractor().read_bytes()
    media = b.file(f"/data/file/free/{_gnuboard_name(rng, 'jpg')}", whole[: len(whole) // 2])
    post.body = f"            <p>저만 이렇게 보이나요?</p>\n            <p>{_ko_img(media, 'plain')}</p>"
    b.hostile["truncated_jpeg_page"] = b.page(post.path, _ko_view(b, chrome, popular, post, None, None))
    b.hostile["truncated_jpeg"] = media

    post = by_role["loop"]
    post.title = "링크 이동이 안 되는 글"
    post.path, post.href = "/bbs/loop1", b.url("/bbs/loop1")
    b.site.redirect("/bbs/loop1", "/bbs/loop2")
    b.site.redirect("/bbs/loop2", b.url("/bbs/loop1"))  # one relative, one absolute Location
    b.hostile["redirect_loop"] = b.url("/bbs/loop1")
    b.hostile["redirect_loop_2"] = b.url("/bbs/loop2")

    post = by_role["hang"]
    post.title = "로딩이 안 끝나는 글"
    b.site.hang(post.path, prefix=b'<!doctype html>\n<html lang="ko">\n<head>\n  <meta charset="utf-8">\n  <title>')
    b.hostile["hanging_page"] = post.href

    post = by_role["private"]
    post.title = "원본 링크 (내부망)"
    leak, admin = f"{PRIVATE}/leak.jpg", f"{PRIVATE}/admin"
    bounce = f"/data/file/free/{_gnuboard_name(rng, 'jpg')}"
    b.site.redirect(bounce, leak)  # a same-site image that redirects to the private address
    link = f"/bbs/link.php?bo_table=free&wr_id={post.wr_id}&no=1"
    b.site.redirect(link, admin)  # gnuboard's link counter: a redirect to the post's link
    post.body = (f"            <p>원본은 여기: <a href=\"{admin}\" target=\"_blank\">{admin}</a></p>\n"
                 f"            <p>{_ko_img(leak, 'plain')}</p>\n            <p>{_ko_img(bounce, 'plain')}</p>")
    extra = (f'        <section id="bo_v_link"><h2>관련링크</h2><ul><li><a href="{esc(b.url(link))}" target="_blank">'
             f'<strong>{admin}</strong></a><br><span class="bo_v_link_cnt">3회 연결</span></li></ul></section>')
    b.hostile["private_page"] = b.page(post.path, _ko_view(b, chrome, popular, post, None, None, extra))
    b.hostile["private_image_redirect"] = b.url(bounce)
    b.hostile["private_link_redirect"] = b.url(link)


# --- the English forum (phpBB 3.3, prosilver) ------------------------------------------------------------------------


@dataclass
class _EnPost:
    post_id: int
    user: tuple[str, int]
    posted: datetime  # UTC, whole seconds
    text: str
    images: list[str] = field(default_factory=list)  # content HTML for attachments


@dataclass
class _Topic:
    topic_id: int
    role: str
    title: str = ""
    posts: list[_EnPost] = field(default_factory=list)
    views: int = 0

    @property
    def path(self) -> str:
        return f"/forum/viewtopic.php?t={self.topic_id}"


def _en_time(moment: datetime, now: datetime) -> str:
    """<time> as prosilver prints it: "12 minutes ago" within the hour, else "Sat Nov 21, 2026 2:03 pm"."""
    age = now - moment
    if age < timedelta(hours=1):
        minutes = max(1, int(age.total_seconds() // 60))
        text = f"{minutes} minute{'s' if minutes > 1 else ''} ago"
    else:
        hour = moment.hour % 12 or 12
        text = f"{moment.strftime('%a %b')} {moment.day}, {moment.year} {hour}:{moment.strftime('%M')} " \
               f"{'am' if moment.hour < 12 else 'pm'}"
    return f'<time datetime="{moment.isoformat()}">{text}</time>'


def _en_layout(b: _Build, section: str, title: str, body: str, canonical: str = "") -> bytes:
    esc = html.escape
    canon = f'<link rel="canonical" href="{esc(b.url(canonical))}">\n' if canonical else ""
    page = f"""<!DOCTYPE html>
<html dir="ltr" lang="en-gb">
<head>
<meta charset="utf-8" />
<meta http-equiv="X-UA-Compatible" content="IE=edge">
<meta name="viewport" content="width=device-width, initial-scale=1" />
<title>{esc(title)} - Example Community Forum</title>
{canon}<link href="./styles/prosilver/theme/stylesheet.css?assets_version=12" rel="stylesheet">
</head>
<body id="phpbb" class="nojs notouch section-{section} ltr ">
<div id="wrap" class="wrap">
  <a id="top" class="top-anchor" accesskey="t"></a>
  <div id="page-header">
    <div class="headerbar" role="banner">
      <div class="inner">
        <div id="site-description" class="site-description">
          <a id="logo" class="logo" href="./index.php" title="Board index">
            <span class="site_logo"><img src="./styles/prosilver/theme/images/site_logo.png" alt=""></span></a>
          <h1>Example Community Forum</h1>
          <p>Off-topic chat, photos and everything else</p>
        </div>
      </div>
    </div>
    <div class="navbar" role="navigation">
      <ul id="nav-breadcrumbs" class="nav-breadcrumbs linklist navlinks" role="menubar">
        <li class="breadcrumbs" itemscope itemtype="https://schema.org/BreadcrumbList">
          <span class="crumb"><a href="./index.php" itemprop="item"><span itemprop="name">Board index</span></a>
          </span>
          <span class="crumb"><a href="./viewforum.php?f=2" itemprop="item"><span itemprop="name">Off-topic</span></a>
          </span>
        </li>
      </ul>
    </div>
  </div>
  <div id="page-body" class="page-body" role="main">
{body}
  </div>
  <div id="page-footer" class="page-footer" role="contentinfo">
    <div class="copyright">Powered by <a href="https://www.phpbb.com/">phpBB</a>&reg; Forum Software
      &copy; phpBB Limited</div>
  </div>
</div>
</body>
</html>
"""
    return page.encode("utf-8")


def _en_user(user: tuple[str, int]) -> str:
    name, uid = user
    return f'<a href="./memberlist.php?mode=viewprofile&amp;u={uid}" class="username">{html.escape(name)}</a>'


def _en_pagination(count: int, noun: str, base: str, start: int, per_page: int) -> str:
    n_pages = math.ceil(count / per_page)
    items = []
    for n in range(n_pages):
        href = base if n == 0 else f"{base}&amp;start={n * per_page}"
        items.append(f'<li class="active"><span>{n + 1}</span></li>' if n * per_page == start else
                     f'<li><a class="button" href="{href}" role="button">{n + 1}</a></li>')
    if start + per_page < count:
        items.append(f'<li class="arrow next"><a class="button button-icon-only" href="{base}&amp;start='
                     f'{start + per_page}" rel="next" role="button"><span class="sr-only">Next</span></a></li>')
    listing = f"<ul>{''.join(items)}</ul>" if n_pages > 1 else ""
    return f'<div class="pagination">{count} {noun}{"s" if count != 1 else ""} {listing}</div>'


def _en_topic_page(b: _Build, topic: _Topic, start: int, avatars: dict[int, str]) -> bytes:
    esc = html.escape
    blocks = []
    for i, post in enumerate(topic.posts[start:start + EN_POSTS], start):
        uid = post.user[1]
        avatar = (f'<a href="./memberlist.php?mode=viewprofile&amp;u={uid}" class="avatar">'
                  f'<img class="avatar" src="{avatars[uid]}" width="64" height="64" alt="User avatar"></a>'
                  if uid in avatars else "")
        heading = topic.title if i == 0 else f"Re: {topic.title}"
        blocks.append(f"""    <div id="p{post.post_id}" class="post has-profile bg{2 - i % 2}">
      <div class="inner">
        <dl class="postprofile" id="profile{post.post_id}">
          <dt class="has-profile-rank">{avatar}{_en_user(post.user)}</dt>
          <dd class="profile-posts"><strong>Posts:</strong> {17 + uid * 3}</dd>
        </dl>
        <div class="postbody">
          <div id="post_content{post.post_id}">
            <h3{' class="first"' if i == 0 else ""}><a href="#p{post.post_id}">{esc(heading)}</a></h3>
            <p class="author"><span class="responsive-hide">by <strong>{_en_user(post.user)}</strong>
              &raquo; </span>{_en_time(post.posted, b.now)}</p>
            <div class="content">{esc(post.text)}{"".join(post.images)}</div>
          </div>
        </div>
        <div class="back2top"><a href="#top" class="top" title="Top">Top</a></div>
      </div>
    </div>
    <hr class="divider" />""")
    base = f"./viewtopic.php?t={topic.topic_id}"
    pagination = _en_pagination(len(topic.posts), "post", base, start, EN_POSTS)
    body = f"""    <h2 class="topic-title"><a href="{base}">{esc(topic.title)}</a></h2>
    <div class="action-bar bar-top">{pagination}</div>
{chr(10).join(blocks)}
    <div class="action-bar bar-bottom">{pagination}</div>"""
    canonical = topic.path + (f"&start={start}" if start else "")
    return _en_layout(b, "viewtopic", topic.title, body, canonical)


def _en_forum_page(b: _Build, topics: list[_Topic], start: int, avatars: dict[int, str]) -> bytes:
    esc = html.escape
    rows = []
    for i, topic in enumerate(topics[start:start + EN_TOPICS]):
        first, last = topic.posts[0], topic.posts[-1]
        rows.append(f"""      <li class="row bg{1 + i % 2}">
        <dl class="row-item topic_read">
          <dt title="No unread posts"><div class="list-inner">
            <a href="./viewtopic.php?t={topic.topic_id}" class="topictitle">{esc(topic.title)}</a><br />
            <div class="topic-poster responsive-hide left-box">by {_en_user(first.user)} &raquo;
              {_en_time(first.posted, b.now)}</div>
          </div></dt>
          <dd class="posts">{len(topic.posts) - 1} <dfn>Replies</dfn></dd>
          <dd class="views">{topic.views} <dfn>Views</dfn></dd>
          <dd class="lastpost"><span><dfn>Last post </dfn>by {_en_user(last.user)}<br />
            {_en_time(last.posted, b.now)}</span></dd>
        </dl>
      </li>""")
    pagination = _en_pagination(len(topics), "topic", "./viewforum.php?f=2", start, EN_TOPICS)
    body = f"""    <h2 class="forum-title"><a href="./viewforum.php?f=2">Off-topic</a></h2>
    <div class="action-bar bar-top">{pagination}</div>
    <div class="forumbg"><div class="inner">
      <ul class="topiclist"><li class="header"><dl class="row-item"><dt><div class="list-inner">Topics</div></dt>
        <dd class="posts">Replies</dd><dd class="views">Views</dd><dd class="lastpost"><span>Last post</span></dd>
      </dl></li></ul>
      <ul class="topiclist topics">
{chr(10).join(rows)}
      </ul>
    </div></div>
    <div class="action-bar bar-bottom">{pagination}</div>"""
    canonical = "/forum/viewforum.php?f=2" + (f"&start={start}" if start else "")
    return _en_layout(b, "viewforum", "Off-topic", body, canonical)


def _plant_en(b: _Build, n_topics: int) -> list[str]:
    """The phpBB forum; returns its obfuscated titles."""
    rng = b.rng
    n_copy = max(1, n_topics // 3)
    rest = n_topics - n_copy
    roles = ["copy"] * n_copy + ["photos"] * (rest - rest // 2) + ["text"] * (rest // 2) + ["links", "garbage"]
    rng.shuffle(roles)
    long_topic = next(i for i, r in enumerate(roles) if r == "copy")  # a copy on the second page of a topic
    topics: list[_Topic] = []
    topic_id, post_id, file_id = 140, 5200, 1200
    for i, (role, (_, started)) in enumerate(zip(reversed(roles), reversed(_timeline(b, len(roles))), strict=True)):
        topic_id += rng.randint(1, 3)
        topic = _Topic(topic_id, role, views=rng.randint(30, 4000))
        n_posts = 12 if len(roles) - 1 - i == long_topic else rng.randint(1, 5) if role != "garbage" else 1
        started = started.replace(microsecond=0)
        span = min(b.now - started - timedelta(seconds=30), timedelta(hours=30))
        times = [started, *sorted(started + span * rng.random() for _ in range(n_posts - 1))]
        for at in times:
            post_id += rng.randint(1, 9)
            topic.posts.append(_EnPost(post_id, rng.choice(EN_USERS), at.replace(microsecond=0),
                                       rng.choice(EN_REPLIES)))
        topics.append(topic)
    topics.sort(key=lambda t: t.posts[-1].posted, reverse=True)  # phpBB lists by last post time

    def attach(post: _EnPost, data: bytes) -> str:
        nonlocal file_id
        file_id += rng.randint(1, 5)
        name = f"IMG_{rng.randint(1000, 9999)}.jpg"
        path = f"/forum/download/file.php?id={file_id}"
        url = b.file(path, data, headers={"Content-Disposition": f'inline; filename="{name}"'})
        post.images.append(
            f'<div class="inline-attachment"><dl class="file"><dt class="attach-image"><img class="postimage" '
            f'src="./download/file.php?id={file_id}" alt="{name}" onclick="viewableArea(this);" /></dt>'
            f"<dd>{name} ({len(data) / 1024:.1f} KiB) Viewed {rng.randint(3, 400)} times</dd></dl></div>")
        return url

    avatars = {uid: "." + b.icon(f"/forum/download/file.php?avatar={uid}_1700000000.png",
                                 _icon(64, 64, (rng.randrange(256), rng.randrange(256), rng.randrange(256))))
                                .removeprefix("/forum")
               for _, uid in (EN_USERS[0], EN_USERS[2], EN_USERS[5], EN_UPLOADER)}
    b.icon("/forum/styles/prosilver/theme/images/site_logo.png", _icon(149, 52, (16, 82, 137), "forum"))
    used: dict[tuple[str, ...], int] = {}
    obfuscated: list[str] = []
    copy_topics = [t for t in topics if t.role == "copy"]
    for topic in topics:
        if topic.role == "copy":
            if not obfuscated and topic is copy_topics[-1]:
                topic.title = EN_OBFUSCATED[0]
                obfuscated.append(topic.title)
            else:
                topic.title = _pick(EN_COPY_TITLES, used)
            at = rng.randrange(10, len(topic.posts)) if len(topic.posts) > EN_POSTS else \
                rng.randrange(len(topic.posts))
            post = topic.posts[at]
            post.text = rng.choice(EN_COPY_TEXT)
            if rng.random() < 0.6:  # the same throwaway account posts most of them
                post.user = EN_UPLOADER
            ref, transform, data = b.planted_image()
            media = attach(post, data)
            page = topic.path + (f"&start={at // EN_POSTS * EN_POSTS}" if at >= EN_POSTS else "")
            b.copies.append(PlantedCopy(ref, b.url(page), media, topic.title, post.user[0], post.posted, transform,
                                        "en", "image", post.posted.isoformat()))
        elif topic.role == "photos":
            topic.title = _pick(EN_PLAIN_TITLES, used)
            for post in rng.sample(topic.posts, rng.randint(1, len(topic.posts))):
                for _ in range(rng.randint(1, 2)):
                    attach(post, b.distractor().read_bytes())
        elif topic.role == "text":
            topic.title = _pick(EN_PLAIN_TITLES, used)
        elif topic.role == "links":
            topic.title = "Mega link list (mirrors, updated daily)"
            links = "".join(f'<a href="/out/{i}" class="postlink">mirror {i}</a><br>' for i in range(MANY_LINKS))
            topic.posts[0].images.append(links)  # raw HTML after the text
            topic.posts[0].text = "All mirrors below."
        elif topic.role == "garbage":
            topic.title = "[broken] encoding test"

    # One re-post of a Korean copy's exact bytes: the same file spreading between sites.
    first_ko = next((c for c in b.copies if c.board == "ko" and c.kind == "image"), None)
    target = next((t for t in topics if t.role == "photos"), None)
    if first_ko is not None and target is not None:
        post = target.posts[-1]
        post.text = "Someone posted this on a Korean board too."
        data = b.copy_bytes[first_ko.media_url]
        media = attach(post, data)
        page = target.path + (f"&start={(len(target.posts) - 1) // EN_POSTS * EN_POSTS}"
                              if len(target.posts) > EN_POSTS else "")
        b.copies.append(PlantedCopy(first_ko.reference, b.url(page), media, target.title, post.user[0],
                                    post.posted, f"{first_ko.transform}, re-posted", "en", "image",
                                    post.posted.isoformat()))

    for topic in topics:
        if topic.role == "garbage":
            garbage = rng.randbytes(48 * 1024)
            b.hostile["garbage_page"] = b.page(topic.path, garbage)  # random bytes served as text/html
            continue
        for start in range(0, len(topic.posts), EN_POSTS):
            path = topic.path + (f"&start={start}" if start else "")
            url = b.page(path, _en_topic_page(b, topic, start, avatars))
            if topic.role == "links":
                b.hostile["many_links_page"] = url
    for start in range(0, len(topics), EN_TOPICS):
        b.page("/forum/viewforum.php?f=2" + (f"&start={start}" if start else ""),
               _en_forum_page(b, topics, start, avatars))
    b.site.put("/forum/index.php", _en_layout(b, "index", "Board index", (
        '    <ul class="topiclist forums"><li class="row"><dl class="row-item forum_read"><dt><div class="list-inner">'
        '<a href="./viewforum.php?f=2" class="forumtitle">Off-topic</a><br />Anything goes.</div></dt>'
        f"<dd class=\"topics\">{len(topics)}</dd></dl></li></ul>")))
    return obfuscated


# --- entry point ----------------------------------------------------------------------------------------------------


def plant_boards(site: FixtureSite, corpus: Path, *, now: datetime, posts_per_board: int = 24,
                 seed: int = 0) -> Planted:
    """Put both boards on `site` (one origin) and say what a crawl should find there.

    `now` is the moment the boards' relative times ("3시간 전") count back from: give the crawler the same clock.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if posts_per_board < 6:
        raise ValueError("posts_per_board must be at least 6")
    rng = random.Random(seed)
    refs = [corpus / "images" / name for name in REFERENCE_POOL if (corpus / "images" / name).exists()]
    distractors = [corpus / "images" / name for name in DISTRACTOR_POOL if (corpus / "images" / name).exists()]
    if not refs or len(distractors) < 4:
        raise FileNotFoundError(f"dev corpus images not found under {corpus}")
    rng.shuffle(refs)
    rng.shuffle(distractors)
    n_copies = 2 * max(1, posts_per_board // 3) + 1
    # Fewer references than copies: some pictures come back on both boards, under other transforms.
    refs = refs[:max(1, min(len(refs), math.ceil(n_copies * 2 / 3)))]
    b = _Build(site, rng, now.astimezone(UTC), corpus, refs, distractors)

    obfuscated = _plant_ko(b, posts_per_board)
    obfuscated += _plant_en(b, posts_per_board)
    site.put("/robots.txt", b"User-agent: *\nDisallow: /adm/\nDisallow: /bbs/login.php\n", content_type="text/plain")
    site.put("/.well-known/security.txt", b"Contact: mailto:abuse@community.example\n"
             b"Expires: 2027-12-31T00:00:00Z\nPreferred-Languages: ko, en\n", content_type="text/plain")
    return Planted(
        references=b.references,
        copies=b.copies,
        hostile=b.hostile,
        seeds=[site.url("/bbs/board.php?bo_table=free&page=1"), site.url("/forum/viewforum.php?f=2")],
        private_urls=[f"{PRIVATE}/leak.jpg", f"{PRIVATE}/admin"],
        pages=len(b.pages),
        media=len(b.media),
        obfuscated_titles=obfuscated,
        page_urls=b.pages,
        media_urls=b.media,
        chrome_urls=b.chrome,
    )
