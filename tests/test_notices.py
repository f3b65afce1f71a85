"""Takedown notices: sites, language and contact discovery, rendering in every language, and mail to a real SMTP
server on loopback. No mocks: the templates are the shipped files, the mail goes through smtplib to aiosmtpd."""

from __future__ import annotations

import email
import email.policy
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from email.header import decode_header, make_header
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope

from clients.notices.contacts import choose_contact, contact_from_security_txt, contacts_from_page
from clients.notices.language import guess_language
from clients.notices.mail import MailError, Sender, SmtpSettings, new_message_id, send_mail
from clients.notices.render import NoticeItem, render_notice
from clients.notices.sites import Site, jurisdiction, load_sites, site_for
from clients.notices.template_files import LANGUAGES, TEMPLATES_DIR, available_languages
from tests.conftest import free_port

EXAMPLE_SITES = Path(__file__).resolve().parents[1] / "clients" / "notices" / "sites.example.yaml"

# ASCII organisation and site names, so that the script checks below see the template's language, not ours.
SENDER = Sender(organisation="Digital Sex Crime Victim Support Center", name="Kim Jiwon",
                email="takedown@center.example.kr", phone="+82-2-000-0000")
SITE_KR = Site(host="board.example.kr", name="Example Board", jurisdiction="KR")
SITE_ABROAD = Site(host="example.com", name="Example Video", policy_url="https://example.com/legal/ncii-policy")
HASHES_1 = {"screenshot": "1" * 63 + "a", "warc": "2" * 63 + "b", "media": "3" * 63 + "c"}
HASHES_2 = {"screenshot": "4" * 63 + "d", "thumbnail": "5" * 63 + "e"}
ITEMS = [
    # 20:30:05 UTC on 3 May is 05:30:05 KST on 4 May: the KST date must roll over.
    NoticeItem(page_url="https://board.example.kr/free/1001", media_url="https://cdn.board.example.kr/v/1001.mp4",
               title="유출 영상 제목", posted_at=datetime(2024, 5, 3, 4, 1, tzinfo=UTC),
               captured_at=datetime(2024, 5, 3, 20, 30, 5, tzinfo=UTC), hashes=HASHES_1),
    NoticeItem(page_url="https://board.example.kr/free/1002?x=1", media_url="https://cdn.board.example.kr/i/1002.jpg",
               title="", posted_at=None,
               captured_at=datetime(2024, 5, 4, 14, 2, 3, tzinfo=timezone(timedelta(hours=9))), hashes=HASHES_2),
]
REFERENCE = "JW-2024-000123"

KST_CAPTURE = {  # item 1's capture time, KST, as each language writes dates
    "ko": "2024년 5월 4일 05:30:05 KST",
    "en": "4 May 2024, 05:30:05 KST",
    "zh": "2024年5月4日 05:30:05 KST",
    "ja": "2024年5月4日 05:30:05 KST",
    "ru": "4 мая 2024 г., 05:30:05 KST",
    "vi": "05:30:05 ngày 4/5/2024 KST",
    "es": "4 de mayo de 2024, 05:30:05 KST",
}
KR_MARKER = {"ko": "제22조의5", "en": "Article 22-5", "zh": "第22条之5", "ja": "第22条の5", "ru": "статье 22-5",
             "vi": "Điều 22-5", "es": "artículo 22-5"}
KR_YOUTH_MARKER = {"ko": "청소년성보호법", "en": "Protection of Children and Youth", "zh": "儿童·青少年性保护",
                   "ja": "児童・青少年の性保護", "ru": "защите детей и подростков",
                   "vi": "Bảo vệ trẻ em và thanh thiếu niên", "es": "Protección de Niños y Jóvenes"}
NOT_ATTACHED = {"ko": "첨부하지 않았습니다", "en": "NOT attached", "zh": "并未附在本邮件中", "ja": "添付しておりません",
                "ru": "НЕ приложены", "vi": "KHÔNG được đính kèm", "es": "NO se adjunta"}


def _count(pattern: str, text: str) -> int:
    return len(re.findall(pattern, text))


def _assert_script(language: str, body: str) -> None:
    hangul, kana = _count(r"[\uac00-\ud7a3]", body), _count(r"[\u3040-\u30ff]", body)
    han, cyrillic = _count(r"[\u4e00-\u9fff]", body), _count(r"[\u0400-\u04ff]", body)
    if language == "ko":
        assert hangul > 300
    elif language == "ja":
        assert kana > 100 and han > 100
    elif language == "zh":
        assert han > 300 and kana == 0
    elif language == "ru":
        assert cyrillic > 500
    elif language == "vi":
        assert _count(r"[ơưđĐ\u1ea0-\u1ef9]", body) > 50
    elif language == "es":
        assert re.search(r"\b(los|las|del)\b", body) and _count(r"[áéíóúñ]", body) > 5
    else:
        assert re.search(r"\bthe\b", body)
    if language != "ko":  # only the Korean law names in parentheses and the post title
        assert hangul < 40
    assert guess_language(body, "") == language


@pytest.mark.parametrize("kind", ["ncii", "youth"])
@pytest.mark.parametrize("where", ["KR", "abroad"])
@pytest.mark.parametrize("language", LANGUAGES)
def test_render_every_language(language: str, where: str, kind: str) -> None:
    site = SITE_KR if where == "KR" else SITE_ABROAD
    subject, body = render_notice(language, site, ITEMS, kind=kind, sender=SENDER, reference=REFERENCE,
                                  jurisdiction=jurisdiction(site, None))
    assert REFERENCE in subject and site.name in subject and "\n" not in subject
    for item in ITEMS:
        assert item.page_url in body and item.media_url in body
        for value in item.hashes.values():
            assert value in body
    assert "thumbnail" in body  # a hash kind without a label still appears, named
    assert "유출 영상 제목" in body
    assert REFERENCE in body and SENDER.email in body and SENDER.phone in body and SENDER.organisation in body
    assert KST_CAPTURE[language] in body
    assert "20:30:05" in body and "05:30:05" in body  # UTC and KST of the same capture
    assert "14:02:03" in body and "05:02:03" in body  # item 2 was captured in KST: shown in both zones
    assert NOT_ATTACHED[language] in body
    assert "{{" not in body and "{%" not in body and "}}" not in subject
    if where == "KR":
        assert KR_MARKER[language] in body and "전기통신사업법" in body
        assert (KR_YOUTH_MARKER[language] in body) == (kind == "youth")
        assert SITE_ABROAD.policy_url not in body
    else:
        assert KR_MARKER[language] not in body
        assert SITE_ABROAD.policy_url in body
        assert ("NCMEC" in body) == (kind == "youth")
    _assert_script(language, body)


def test_render_rejects_bad_input(tmp_path: Path) -> None:
    args = {"kind": "ncii", "sender": SENDER, "reference": REFERENCE, "jurisdiction": "KR"}
    with pytest.raises(ValueError, match="no notice template for language 'fr'"):
        render_notice("fr", SITE_KR, ITEMS, **args)
    with pytest.raises(ValueError, match="no notice template"):
        render_notice("../templates/en", SITE_KR, ITEMS, **args)
    with pytest.raises(ValueError, match="kind"):
        render_notice("en", SITE_KR, ITEMS, **{**args, "kind": "csam"})
    naive = NoticeItem("https://x.example/1", "https://x.example/1.jpg", "t", None, datetime(2024, 1, 1), {})
    with pytest.raises(ValueError, match="timezone-aware"):
        render_notice("en", SITE_KR, [naive], **args)
    bad_hash = NoticeItem("https://x.example/1", "https://x.example/1.jpg", "t", None, datetime.now(UTC),
                          {"media": "abc"})
    with pytest.raises(ValueError, match="SHA-256"):
        render_notice("en", SITE_KR, [bad_hash], **args)
    with pytest.raises(ValueError, match="at least one item"):
        render_notice("en", SITE_KR, [], **args)


def test_officer_adds_a_language_and_typos_fail_loudly(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, templates)
    assert set(available_languages()) >= set(LANGUAGES)
    shutil.copy(templates / "en.yaml", templates / "fr.yaml")
    assert "fr" in available_languages(templates)
    subject, _ = render_notice("fr", SITE_KR, ITEMS, kind="ncii", sender=SENDER, reference=REFERENCE,
                               jurisdiction="KR", templates_dir=templates)
    assert REFERENCE in subject
    text = (templates / "fr.yaml").read_text(encoding="utf-8").replace("{{ reference }}", "{{ refrence }}", 1)
    (templates / "fr.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=r"fr\.yaml.*refrence"):
        render_notice("fr", SITE_KR, ITEMS, kind="ncii", sender=SENDER, reference=REFERENCE, jurisdiction="KR",
                      templates_dir=templates)
    (templates / "de.yaml").write_text("subject: x\nbody: y\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"de\.yaml: missing legal_kr_ncii"):
        render_notice("de", SITE_KR, ITEMS, kind="ncii", sender=SENDER, reference=REFERENCE, jurisdiction="KR",
                      templates_dir=templates)


# ---------------------------------------------------------------------------------------------------------------
# Sites


def test_example_sites_and_round_trip(tmp_path: Path) -> None:
    example = load_sites(EXAMPLE_SITES)
    assert set(example) == {"board.example.kr", "example.com", "tube.example"}
    assert example["board.example.kr"].jurisdiction == "KR"
    assert example["tube.example"].abuse_contact is None

    path = tmp_path / "sites.yaml"
    path.write_text(
        "Board.Example.KR.:\n"
        "  name: 예시 게시판\n"
        "  language: ko\n"
        "  abuse_contact: mailto:Report@Board.Example.KR\n"
        "  jurisdiction: kr\n"
        "  policy_url: https://board.example.kr/policy\n"
        "video.example:\n"
        "xn--vv4b11d.xn--3e0b707e:\n"
        "  language: ko\n"
        "  abuse_contact: report@xn--vv4b11d.xn--3e0b707e\n", encoding="utf-8")
    sites = load_sites(path)
    assert sites["board.example.kr"] == Site(host="board.example.kr", name="예시 게시판", language="ko",
                                             abuse_contact="Report@board.example.kr", jurisdiction="KR",
                                             policy_url="https://board.example.kr/policy")
    assert sites["video.example"] == Site(host="video.example")
    assert sites["예시.한국"].abuse_contact == "report@xn--vv4b11d.xn--3e0b707e"  # IDN keys kept in Unicode

    assert site_for("https://www.board.example.kr/free/1", sites).name == "예시 게시판"
    assert site_for("https://m.board.example.kr:8443/x?y=1", sites).host == "board.example.kr"
    assert site_for("board.example.kr/free/1", sites).host == "board.example.kr"
    assert site_for("https://www.xn--vv4b11d.xn--3e0b707e/a", sites).host == "예시.한국"
    assert site_for("https://board.example.kr.evil.example/", sites) == Site(host="board.example.kr.evil.example")
    assert site_for("https://notboard.example.kr/", sites) == Site(host="notboard.example.kr")


@pytest.mark.parametrize(("yaml_text", "message"), [
    ("board.example.kr:\n  abuse_contact: report at board.example.kr\n", "board.example.kr.*'abuse_contact'"),
    ("board.example.kr:\n  abuse_contact: https://board.example.kr/report\n", "'abuse_contact'"),
    ("board.example.kr:\n  language: korean\n", "board.example.kr.*'language'.*'korean'"),
    ("board.example.kr:\n  abuse_email: a@b.example\n", "unknown field.*abuse_email"),
    ("board.example.kr:\n  jurisdiction: Korea\n", "'jurisdiction'"),
    ("board.example.kr:\n  policy_url: board.example.kr/policy\n", "'policy_url'"),
    ("https://board.example.kr/:\n  name: x\n", "bare host"),
    ("- board.example.kr\n", "expected a mapping"),
])
def test_load_sites_rejects(tmp_path: Path, yaml_text: str, message: str) -> None:
    path = tmp_path / "bad-sites.yaml"
    path.write_text(yaml_text, encoding="utf-8")
    with pytest.raises(ValueError, match=message) as caught:
        load_sites(path)
    assert "bad-sites.yaml" in str(caught.value)


def test_jurisdiction() -> None:
    assert jurisdiction(Site("example.com", jurisdiction="KR"), None) == "KR"
    assert jurisdiction(Site("board.example.co.kr"), None) == "KR"
    assert jurisdiction(Site("예시.한국"), None) == "KR"
    assert jurisdiction(Site("xn--vv4b11d.xn--3e0b707e"), None) == "KR"
    footer = "<footer>(주)예시 | 대표 홍길동 | 사업자등록번호 000-00-00000</footer>"
    assert jurisdiction(Site("video.example"), footer) == "KR"
    assert jurisdiction(Site("video.example"), "<p>Hello</p>") == ""
    assert jurisdiction(Site("example.com", jurisdiction="US"), None) == "US"


# ---------------------------------------------------------------------------------------------------------------
# Language


@pytest.mark.parametrize(("language", "html_text"), [
    ("ko", "<html><body><h1>자유게시판</h1><p>오늘 올라온 영상 보셨나요? 댓글 부탁드립니다.</p></body></html>"),
    ("ja", "<html><body><h1>掲示板</h1><p>この動画を見ましたか？コメントをお願いします。</p></body></html>"),
    ("zh", "<html><body><h1>论坛</h1><p>你看过今天上传的视频吗？请留言。</p></body></html>"),
    ("ru", "<html><body><h1>Форум</h1><p>Вы видели сегодняшнее видео? Оставьте комментарий.</p></body></html>"),
    ("vi", "<html><body><h1>Diễn đàn</h1><p>Bạn đã xem video được đăng hôm nay chưa? Hãy để lại bình luận.</p>"),
    ("es", "<html><body><h1>Foro</h1><p>¿Has visto el vídeo de hoy? Deja tu comentario, por favor.</p></body>"),
    ("en", "<html><body><h1>Forum</h1><p>Have you seen the video that was posted today? Leave a comment on it and "
           "share it with your friends.</p></body></html>"),
])
def test_guess_language_from_text(language: str, html_text: str) -> None:
    assert guess_language(html_text, "video.example") == language


def test_guess_language_declared_tld_and_default() -> None:
    assert guess_language('<html lang="ko-KR"><body>Hello</body></html>', "example.com") == "ko"
    assert guess_language('<html class="x" lang="zh-Hant-TW">', "example.com") == "zh"
    assert guess_language("<html lang='zh_Hans'>", "example.com") == "zh"
    assert guess_language('<html lang="es-MX">', "example.com") == "es"
    assert guess_language('<html lang="kr">', "example.com") == "ko"  # a common mistake for "ko"
    meta = '<head><meta http-equiv="Content-Language" content="ja"></head><body>abc</body>'
    assert guess_language(meta, "example.com") == "ja"
    # A stock theme's lang="en" over Korean content: the script wins.
    stock_theme = '<html lang="en"><body><p>불법촬영물 신고 게시판입니다</p></body></html>'
    assert guess_language(stock_theme, "x.example") == "ko"
    # Script and style are not text.
    assert guess_language("<script>var 변수 = '한국어';</script><p>Вход на сайт</p>", "example.com") == "ru"
    for host, language in [("board.example.kr", "ko"), ("example.jp", "ja"), ("example.tw", "zh"),
                           ("example.ru", "ru"), ("example.vn", "vi"), ("example.mx", "es"),
                           ("예시.한국", "ko"), ("example.com", "en")]:
        assert guess_language("<html><body><img src='a.jpg'></body></html>", host) == language
        assert guess_language(None, host) == language
    assert guess_language('<html lang="fr"><body>Bonjour</body></html>', "example.fr") == "en"


# ---------------------------------------------------------------------------------------------------------------
# Contacts

SECURITY_TXT = """\
-----BEGIN PGP SIGNED MESSAGE-----
Hash: SHA256

# Our security policy
# Contact: mailto:old@example.com
Contact: https://example.com/security/report
Contact: tel:+1-201-555-0123
Contact: mailto:Security%2BNCII@Example.COM?subject=report
Expires: 2030-12-31T23:00:00.000Z
Preferred-Languages: en, ko
Canonical: https://example.com/.well-known/security.txt
-----BEGIN PGP SIGNATURE-----
Contact: mailto:inside-signature@example.com
iQIzBAEBCAAdFiEE
-----END PGP SIGNATURE-----
"""


def _cfemail(address: str, key: int = 0x5A) -> str:
    return bytes([key, *(b ^ key for b in address.encode())]).hex()


def test_contact_from_security_txt() -> None:
    assert contact_from_security_txt(SECURITY_TXT) == "Security+NCII@example.com"
    assert contact_from_security_txt("Contact: https://example.com/form\n") is None
    assert contact_from_security_txt("contact:   abuse@example.com  \n") == "abuse@example.com"  # lax but common
    assert contact_from_security_txt("# Contact: mailto:x@example.com\n") is None
    assert contact_from_security_txt("") is None


CONTACT_PAGE = f"""<!doctype html>
<html lang="ko"><head><title>고객센터</title>
<script>var support = "script@example.kr";</script></head>
<body>
<img src="/img/logo@2x.png" alt="logo"> <span>logo@2x.png</span>
<p>Contact us at help.board.example.kr for anything else.</p>
<p>일반 문의: <a href="mailto:Info@Board.Example.KR">Info@Board.Example.KR</a></p>
<p>광고 문의: ads@board.example.kr, no-reply@board.example.kr</p>
<p>불법촬영물 신고: takedown-team (at) board.example.kr</p>
<p>Abuse reports: abuse [at] example [dot] com</p>
<p>개인정보 보호책임자: privacy @ board.example.kr</p>
<p>Webmaster: <a href="/cdn-cgi/l/email-protection" class="__cf_email__"
   data-cfemail="{_cfemail("master@board.example.kr")}">[email&#160;protected]</a></p>
<p>운영팀: ops&#64;board.example.kr / 다시: info@board.example.kr</p>
</body></html>"""


def test_contacts_from_page() -> None:
    contacts = contacts_from_page(CONTACT_PAGE)
    assert contacts[0] == "abuse@example.com"
    assert set(contacts[1:3]) == {"takedown-team@board.example.kr", "privacy@board.example.kr"}
    assert contacts[-1] == "no-reply@board.example.kr"
    assert set(contacts) == {"abuse@example.com", "takedown-team@board.example.kr", "privacy@board.example.kr",
                             "Info@board.example.kr", "ads@board.example.kr", "master@board.example.kr",
                             "ops@board.example.kr", "no-reply@board.example.kr"}
    assert not any(c.endswith(".png") or c.startswith("us@") or c.startswith("script@") for c in contacts)
    # Context counts: an address written next to 신고 ranks above a plain one.
    page = "<p>문의: a@x.example</p><p>불법촬영물 신고 접수: b@x.example</p>"
    assert contacts_from_page(page) == ["b@x.example", "a@x.example"]
    assert contacts_from_page("<p>no addresses here</p>") == []


def test_choose_contact_precedence() -> None:
    bare = Site("board.example.kr")
    configured = Site("board.example.kr", abuse_contact="report@board.example.kr")
    assert choose_contact(configured, SECURITY_TXT, CONTACT_PAGE) == ("report@board.example.kr", "site config")
    assert choose_contact(bare, SECURITY_TXT, CONTACT_PAGE) == ("Security+NCII@example.com", "security.txt")
    # No usable address in security.txt (a web form only): fall through to the page, preferring the site's own domain
    # over an abuse@ elsewhere (that one could be anyone's, written into a post).
    assert choose_contact(bare, "Contact: https://board.example.kr/form\n", CONTACT_PAGE) == (
        "takedown-team@board.example.kr", "page")
    assert choose_contact(Site("video.example"), None, CONTACT_PAGE) == ("abuse@example.com", "page")
    assert choose_contact(bare, None, "<p>nothing</p>") == (None, "none")
    assert choose_contact(bare, None, None) == (None, "none")


# ---------------------------------------------------------------------------------------------------------------
# Mail


class _Collect:
    """aiosmtpd handler: keeps what it is sent; refuses recipients starting with "refuse"."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_RCPT(self, server: object, session: object, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if address.startswith("refuse"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: object, session: object, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


@pytest.fixture()
def smtp_server() -> Iterator[tuple[SmtpSettings, _Collect]]:
    handler = _Collect()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield SmtpSettings(host="127.0.0.1", port=port, timeout_s=5.0), handler
    finally:
        controller.stop()


def test_send_mail(smtp_server: tuple[SmtpSettings, _Collect]) -> None:
    smtp, handler = smtp_server
    sender = Sender(organisation="디지털성범죄피해자지원센터 (Digital Sex Crime Victim Support Center)", name="김지원",
                    email="takedown@center.example.kr")
    subject, body = render_notice("ko", SITE_KR, ITEMS, kind="ncii", sender=sender, reference=REFERENCE,
                                  jurisdiction="KR")
    message_id = new_message_id("center.example.kr")
    assert re.fullmatch(r"<[^<>@\s]+@center\.example\.kr>", message_id)
    send_mail(smtp, sender=sender, recipient="report@board.example.kr", subject=subject, body=body,
              message_id=message_id, cc=("records@center.example.kr",))

    assert len(handler.envelopes) == 1
    envelope = handler.envelopes[0]
    assert envelope.mail_from == "takedown@center.example.kr"
    assert envelope.rcpt_tos == ["report@board.example.kr", "records@center.example.kr"]
    message = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert message["Subject"] == subject and "삭제 요청" in str(message["Subject"])
    assert message["Message-ID"] == message_id
    assert message["To"] == "report@board.example.kr"
    assert message["Cc"] == "records@center.example.kr"
    assert message["Reply-To"] == "takedown@center.example.kr"
    # The folded From is two adjacent encoded-words; RFC 2047 joins them without a space, which decode_header does
    # and the headerregistry address parser does not (it reads "Digi tal"), so read the raw header.
    raw_from = email.message_from_bytes(envelope.content, policy=email.policy.compat32)["From"]
    assert str(make_header(decode_header(raw_from))) == f"{sender.organisation} <{sender.email}>"
    assert message["Date"].datetime.tzinfo is not None
    assert message.get_content_type() == "text/plain" and message.get_content_charset() == "utf-8"
    assert message.get_content() == body


def test_send_mail_failures(smtp_server: tuple[SmtpSettings, _Collect]) -> None:
    smtp, _ = smtp_server
    args = {"sender": SENDER, "subject": "s", "body": "b", "message_id": new_message_id("center.example.kr")}
    with pytest.raises(MailError, match="refused"):
        send_mail(smtp, recipient="refuse@board.example.kr", **args)
    with pytest.raises(MailError, match="refused"):  # delivered to one, not the other: still a failure
        send_mail(smtp, recipient="report@board.example.kr", cc=("refuse-cc@center.example.kr",), **args)
    with pytest.raises(MailError, match="failed"):
        send_mail(SmtpSettings(host="127.0.0.1", port=free_port(), timeout_s=2.0), recipient="a@b.example", **args)
    with pytest.raises(ValueError, match="recipient"):
        send_mail(smtp, recipient="report at board.example.kr", **args)
    with pytest.raises(ValueError, match="message_id"):
        send_mail(smtp, recipient="a@b.example", **{**args, "message_id": "no-brackets@x"})
    assert "hunter2" not in repr(SmtpSettings(host="h", username="u", password="hunter2"))
