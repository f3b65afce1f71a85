"""The officer console in a real headless Chromium (Debian `chromium` through Selenium), against the console on
loopback, a real gRPC service with real models, PostgreSQL, a loopback fixture site and a loopback SMTP server.

One officer's morning, in order (the steps share `desk`): log in, see two matches blurred, reveal one, reject one
and see the same media not match again, confirm the other and approve its notice, watch its removal appear in the
chart, open a case and upload a reference (retro-hunt hits at once), forget it. Each page is saved as a PNG in
build/console-screenshots/ (or $JIWOOM_CONSOLE_SCREENSHOTS) for a person to look at.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.header import decode_header, make_header
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import av
import numpy as np
import psycopg
import pytest
from PIL import Image, ImageFilter
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from bench import transforms
from bench.fixture_site import FixtureSite
from clients.console.app import Console, create_app, serving
from clients.evidence.capture import Browser
from clients.worker import Worker, drafting, fetch_policy, open_vault
from ingest.crawler import CrawlStats
from ingest.progress import Progress
from jiwoom.api.client import MatcherClient
from jiwoom.api.proto_gen.jiwoom.v1 import matcher_pb2 as pb
from server.storage.db import open_pool
from tests.conftest import ASTRONAUT, GRACE_HOPPER, Mailbox, action_desk, free_port, publish_post
from tests.media_samples import encode_video

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = Path(os.environ.get("JIWOOM_CONSOLE_SCREENSHOTS", ROOT / "build" / "console-screenshots"))
CASE = "case-console"
VIDEO = "vid_003.mp4"  # 10 s
YOUTH = "youth"
NEW_CASE = "case-console-2"
WAIT_S = 20


@dataclass
class Desk:
    database_url: str
    base: str
    browser: Browser
    worker: Worker
    tokens: dict[str, str]
    clients: dict[str, MatcherClient]
    site: FixtureSite
    mailbox: Mailbox
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def driver(self) -> WebDriver:
        return self.browser.driver

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def shoot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        png, _ = self.browser.capture_page(max_height_px=6000)
        path = SCREENSHOTS / f"{name}.png"
        path.write_bytes(png)
        return path

    def run_worker(self) -> dict[str, int]:
        return asyncio.run(self.worker.run_once())

    def sql(self, query: str, params: tuple = ()) -> list[tuple]:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description else []

    def fetch(self, path: str, *, data: bytes | None = None, cookies: bool = True) -> tuple[int, bytes, dict]:
        """An HTTP request outside the browser, with the browser's session cookie (or none)."""
        request = urllib.request.Request(self.base + path, data=data)
        if cookies:
            request.add_header("Cookie", "; ".join(f"{c['name']}={c['value']}" for c in self.driver.get_cookies()))
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(request, timeout=30) as response:
                return response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as error:
            return error.code, error.read(), dict(error.headers)

    def submit(self, element: Any) -> None:
        """Click something that loads a new page, and wait until it has. The old page is marked in its window
        rather than held as an element: asking ChromeDriver about an element of a page that is going away can
        fail with "Node with given id does not belong to the document" instead of reporting it stale."""
        self.driver.execute_script("window.jiwoomOldPage = true")
        element.click()
        self.wait(lambda driver: driver.execute_script(
            "return window.jiwoomOldPage === undefined && document.readyState === 'complete'"))

    def flash(self) -> str:
        return " ".join(e.text for e in self.driver.find_elements(By.CSS_SELECTOR, ".flash"))

    def wait(self, condition: Any) -> Any:
        return WebDriverWait(self.driver, WAIT_S).until(condition)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any) -> None:
        return None


@pytest.fixture(scope="module")
def desk(postgres_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    with action_desk(postgres_server, tmp_path_factory.mktemp("console")) as served, FixtureSite() as site, \
            open_pool(served.database_url, max_size=6) as console_pool, \
            Browser(policy=fetch_policy(served.settings)) as browser:
        settings = served.settings
        console = Console(settings, console_pool, open_vault(settings, create=False), drafting(settings),
                          served.channel)
        with serving(create_app(console), "127.0.0.1:0", threads=4) as port:
            yield Desk(served.database_url, f"http://127.0.0.1:{port}", browser, served.worker, served.tokens,
                       served.clients, site, served.mailbox)


def crawl(desk: Desk, page: str, media: str) -> pb.MatchResponse:
    """What the crawler does for one post: Match with the page's metadata, so a sighting is recorded."""
    source = pb.Source(url=desk.site.url(media), page_url=desk.site.url(page), site=desk.site.origin,
                       title="[유출] 테스트 게시물 (benign fixture)", author="익명123")
    source.posted_at.FromDatetime(datetime(2026, 11, 21, 5, 3, tzinfo=UTC))
    return desk.clients["crawler"].match(desk.site.get(media), source=source)


def clip(video: Path, start_s: float, end_s: float) -> bytes:
    """A cut from the middle of a video, re-encoded at half size: what re-uploaders post."""
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24", width=frame.width // 4 * 2, height=frame.height // 4 * 2)
                  for frame in container.decode(stream) if start_s <= float(frame.pts * stream.time_base) < end_s]
    return encode_video(frames, "mp4", "libx264", 25, preset="ultrafast")


def sharpness(picture: Image.Image) -> float:
    """Mean edge strength: high for a photo, near zero once it is blurred."""
    edges = np.asarray(picture.convert("L").filter(ImageFilter.FIND_EDGES), dtype=np.float32)
    return float(edges[2:-2, 2:-2].mean())


def item_card(desk: Desk, item_id: int) -> Any:
    return desk.driver.find_element(By.ID, f"item-{item_id}")


def test_login_then_the_queue_shows_both_matches(desk: Desk, corpus: Path) -> None:
    references = {}
    for name in (ASTRONAUT, GRACE_HOPPER):
        references[name] = desk.clients["case_system"].register_reference(
            CASE, (corpus / "images" / name).read_bytes()).reference_id
    copies = {
        ASTRONAUT: transforms.encode(transforms.resize(transforms.load(corpus / "images" / ASTRONAUT), 0.6),
                                     "JPEG", 80),
        GRACE_HOPPER: transforms.encode(transforms.crop(transforms.load(corpus / "images" / GRACE_HOPPER), 0.85),
                                        "JPEG", 85),
    }
    sightings = {}
    for n, name in enumerate((ASTRONAUT, GRACE_HOPPER), 1):
        publish_post(desk.site, f"/board/{n}", f"/img/{n}.jpg", copies[name])
        response = crawl(desk, f"/board/{n}", f"/img/{n}.jpg")
        assert references[name] in {m.reference_id for m in response.matches}
        sightings[name] = response.sighting_id
    # A video reference and a clip cut from its middle, re-encoded smaller, posted on the same board.
    video = corpus / "videos" / VIDEO
    references[VIDEO] = desk.clients["case_system"].register_reference(CASE, video.read_bytes()).reference_id
    publish_post(desk.site, "/board/4", "/vid/4.mp4", clip(video, 3.0, 8.0))
    desk.site.put("/vid/4.mp4", clip(video, 3.0, 8.0), content_type="video/mp4")
    response = crawl(desk, "/board/4", "/vid/4.mp4")
    assert references[VIDEO] in {m.reference_id for m in response.matches}
    sightings[VIDEO] = response.sighting_id
    # A suspected post with a face flagged under 19 (as the service records one): no case, first in the queue.
    publish_post(desk.site, "/board/5", "/img/5.jpg", transforms.encode(transforms.load(corpus / "images" /
                                                                                       "img_0010.jpg")))
    sightings[YOUTH] = desk.sql(
        "insert into sightings (url, page_url, site, title, suspected, kind, youth_faces, seen_by)"
        " values (%s, %s, %s, '교복 사진', true, 'image', 1, 'test') returning id",
        (desk.site.url("/img/5.jpg"), desk.site.url("/board/5"), desk.site.origin))[0][0]
    counts = desk.run_worker()
    assert counts["captured"] == 4 and counts["failed"] == 0
    items = dict(desk.sql("select sighting_id, id from evidence_items"))
    desk.state.update(references=references, copies=copies,
                      items={name: items[sightings[name]] for name in sightings})

    desk.open("/queue")  # not logged in: the log-in page
    assert "/login" in desk.driver.current_url
    desk.shoot("01-login")
    for name, token in (("test-crawler", desk.tokens["crawler"]), ("test-officer", "not-a-token"),
                        ("someone-else", desk.tokens["officer"])):
        desk.driver.find_element(By.ID, "name").send_keys(name)
        desk.driver.find_element(By.ID, "token").send_keys(token)
        desk.submit(desk.driver.find_element(By.ID, "login"))
        assert "/login" in desk.driver.current_url and "상담원 토큰이 아닙니다" in desk.flash()
    desk.driver.find_element(By.ID, "name").send_keys("test-officer")
    desk.driver.find_element(By.ID, "token").send_keys(desk.tokens["officer"])
    desk.submit(desk.driver.find_element(By.ID, "login"))
    desk.wait(expected_conditions.url_contains("/queue"))
    cards = desk.driver.find_elements(By.CSS_SELECTOR, "article.item")
    assert {c.get_attribute("id") for c in cards} == {f"item-{i}" for i in desk.state["items"].values()}
    youth = item_card(desk, desk.state["items"][YOUTH])
    assert cards[0].get_attribute("id") == youth.get_attribute("id")  # the most urgent first
    assert "19세 미만?" in youth.text and "판정이 아니라" in youth.text
    assert "증거 수집 중" not in youth.text
    segment = item_card(desk, desk.state["items"][VIDEO]).find_element(By.CSS_SELECTOR, ".segment").text
    assert re.search(r"게시물 00:0\d–00:0\d ↔ 참조 00:0[2-4]–00:0[6-9]", segment), segment  # where in the video
    text = desk.driver.find_element(By.TAG_NAME, "main").text
    assert "검토 대기열" in text and ("복제 탐지 임베딩" in text or "PDQ 해시" in text)
    assert f"사건 {CASE}의 참조 #{references[ASTRONAUT]}" in text
    assert "익명123" in text and "2026-11-21 14:03 KST" in text  # poster and post time, in KST
    assert "증거 수집 완료" in text  # the evidence status
    assert desk.sql("select count(*) from audit_log where action = 'ConsoleLogin' and actor = 'test-officer'"
                    )[0][0] == 1
    desk.shoot("02-queue")
    assert "오탐 가능성: " in text  # each match's calibrated chance of being false
    desk.open("/queue?order=confidence")
    ordered = [c.get_attribute("id") for c in desk.driver.find_elements(By.CSS_SELECTOR, "article.item")]
    surest = dict(desk.sql("select e.id, min(m.p_false) from evidence_items e join matches m on m.sighting_id ="
                           " e.sighting_id and m.reference_id = e.reference_id group by e.id"))
    youth_id = f"item-{desk.state['items'][YOUTH]}"  # no match, so no confidence: after every match
    assert ordered == [f"item-{i}" for i in sorted(surest, key=lambda i: (surest[i], i))] + [youth_id]


def test_pictures_are_blurred_and_grey_until_one_is_revealed(desk: Desk) -> None:
    desk.open("/queue")
    astronaut, hopper = desk.state["items"][ASTRONAUT], desk.state["items"][GRACE_HOPPER]
    images = {i: item_card(desk, i).find_element(By.CSS_SELECTOR, "figure.veiled img")
              for i in desk.state["items"].values()}  # the video's is the frame where it matched
    for item_id, img in images.items():
        src = img.get_attribute("src")
        assert "view=clear" not in src and "obscured" in img.get_attribute("class")
        desk.wait(lambda _d, img=img: desk.driver.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth > 0", img))
        status, body, _ = desk.fetch(src.removeprefix(desk.base))
        veiled = Image.open(io.BytesIO(body))
        assert status == 200 and veiled.mode == "L"  # grey
        status, body, _ = desk.fetch(src.removeprefix(desk.base) + "&view=clear")
        clear = Image.open(io.BytesIO(body)).convert("RGB")
        channels = np.asarray(clear, dtype=np.int16)
        assert status == 200 and np.abs(channels[..., 0] - channels[..., 2]).mean() > 3  # in colour
        assert sharpness(veiled) < 0.35 * sharpness(clear), item_id  # blurred past recognising
    reveals_before = desk.sql("select count(*) from audit_log where action = 'RevealItem'")[0][0]

    # Reveal one: only that one shows; revealing the other blurs the first again.
    item_card(desk, astronaut).find_element(By.CSS_SELECTOR, "button.reveal").click()
    desk.wait(lambda _d: "view=clear" in images[astronaut].get_attribute("src"))
    desk.wait(lambda _d: desk.driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0",
                                                    images[astronaut]))
    assert "view=clear" not in images[hopper].get_attribute("src")
    desk.shoot("03-queue-one-revealed")
    item_card(desk, hopper).find_element(By.CSS_SELECTOR, "button.reveal").click()
    desk.wait(lambda _d: "view=clear" in images[hopper].get_attribute("src"))
    assert "view=clear" not in images[astronaut].get_attribute("src")
    assert "revealed" not in item_card(desk, astronaut).find_element(By.CSS_SELECTOR, "figure").get_attribute("class")
    item_card(desk, hopper).find_element(By.CSS_SELECTOR, "button.reveal").click()  # and hide it again
    desk.wait(lambda _d: "view=clear" not in images[hopper].get_attribute("src"))
    assert desk.sql("select count(*) from audit_log where action = 'RevealItem' and actor = 'test-officer'"
                    )[0][0] >= reveals_before + 2

    # The item page: the page screenshot, blurred the same way; the stored artefacts and their hashes.
    desk.open(f"/items/{astronaut}")
    assert "view=clear" not in desk.driver.find_element(By.CSS_SELECTOR, "section figure.veiled img"
                                                        ).get_attribute("src")
    hashes = {h.text for h in desk.driver.find_elements(By.CSS_SELECTOR, "td.hash")}
    stored = {bytes(r[0]).hex() for r in desk.sql("select sha256 from evidence_artefacts where item_id = %s",
                                                  (astronaut,))}
    assert hashes == stored and len(stored) == 4
    desk.shoot("04-item")


def test_reject_puts_the_media_in_the_case_negative_bank(desk: Desk) -> None:
    astronaut = desk.state["items"][ASTRONAUT]
    desk.open("/queue")
    card = item_card(desk, astronaut)
    card.find_element(By.NAME, "note").send_keys("다른 사람입니다")
    desk.submit(card.find_element(By.ID, f"reject-{astronaut}"))
    desk.wait(expected_conditions.url_contains("/queue"))
    assert f"#{astronaut} 거부" in desk.flash()
    assert not desk.driver.find_elements(By.ID, f"item-{astronaut}")  # gone from the open queue
    assert desk.sql("select review_state, reviewed_by, review_note from evidence_items where id = %s",
                    (astronaut,)) == [("rejected", "test-officer", "다른 사람입니다")]
    assert desk.sql("select case_id, created_by from benign_media") == [(CASE, "test-officer")]
    assert desk.sql("select count(*) from audit_log where action = 'RejectItem' and target = %s",
                    (f"item:{astronaut}",))[0][0] == 1
    # It left the draft notice it was in; the other item stays.
    assert desk.sql("select count(*) from notice_items where item_id = %s", (astronaut,))[0][0] == 0

    # The same media posted again elsewhere on the board does not match the case again.
    publish_post(desk.site, "/board/3", "/img/3.jpg", desk.state["copies"][ASTRONAUT])
    again = crawl(desk, "/board/3", "/img/3.jpg")
    assert desk.state["references"][ASTRONAUT] not in {m.reference_id for m in again.matches}
    desk.run_worker()
    desk.open("/queue?show=rejected")
    assert item_card(desk, astronaut)
    desk.shoot("05-queue-rejected")


def test_a_youth_flag_is_escalated_then_rejected_without_touching_any_bank(desk: Desk) -> None:
    youth = desk.state["items"][YOUTH]
    desk.open("/queue")
    desk.submit(item_card(desk, youth).find_element(By.ID, f"escalate-{youth}"))
    assert "상급자 검토" in item_card(desk, youth).text  # still in the queue, marked
    assert not item_card(desk, youth).find_elements(By.ID, f"escalate-{youth}")
    card = item_card(desk, youth)
    card.find_element(By.NAME, "note").send_keys("성인으로 확인")
    desk.submit(card.find_element(By.ID, f"reject-{youth}"))
    assert desk.sql("select review_state from evidence_items where id = %s", (youth,)) == [("rejected",)]
    assert desk.sql("select count(*) from benign_media")[0][0] == 1  # only the case's rejection above
    # Its youth notice draft had only this item: cancelled.
    assert desk.sql("select n.state from notices n where n.kind = 'youth'") == [("cancelled",)]
    assert [r[0] for r in desk.sql("select action from audit_log where target = %s and action like '%%Item'"
                                   " and action <> 'RevealItem' order by id", (f"item:{youth}",))] == \
        ["EscalateItem", "RejectItem"]


def test_confirm_then_approve_sends_the_notice_once(desk: Desk) -> None:
    hopper = desk.state["items"][GRACE_HOPPER]
    desk.open("/queue")
    desk.submit(item_card(desk, hopper).find_element(By.ID, f"confirm-{hopper}"))
    desk.wait(expected_conditions.url_contains("/queue"))
    assert desk.sql("select review_state from evidence_items where id = %s", (hopper,)) == [("confirmed",)]
    notice_id = desk.sql("select notice_id from notice_items where item_id = %s", (hopper,))[0][0]

    desk.open("/notices")
    desk.shoot("06-notices-draft")
    desk.submit(desk.driver.find_element(By.ID, f"notice-{notice_id}"))
    tabs = desk.driver.find_elements(By.CSS_SELECTOR, "nav.languages-tabs a")
    assert len(tabs) == 7  # ko, en, zh, ja, ru, vi, es
    assert desk.driver.find_element(By.ID, "notice-state").text == "초안"
    desk.submit(desk.driver.find_element(By.ID, "text-en"))
    subject = desk.driver.find_element(By.ID, "subject")
    assert desk.site.url("/board/2") in desk.driver.find_element(By.ID, "body").get_attribute("value")
    subject.clear()
    subject.send_keys("Removal request: intimate image posted without consent (reviewed)")
    desk.driver.find_element(By.CSS_SELECTOR, "#send-language option[value=en]").click()
    desk.submit(desk.driver.find_element(By.ID, "save"))
    assert "저장했습니다" in desk.flash()
    assert desk.sql("select language from notices where id = %s", (notice_id,)) == [("en",)]
    assert desk.sql("select edited_by from notice_texts where notice_id = %s and language = 'en'",
                    (notice_id,)) == [("test-officer",)]
    desk.shoot("07-notice-edit")
    assert not desk.mailbox.messages  # nothing goes out before approval
    desk.submit(desk.driver.find_element(By.ID, "approve"))
    assert desk.driver.find_element(By.ID, "notice-state").text == "승인됨"

    # Approving decided the video item of the same notice, which nobody had confirmed yet.
    video = desk.state["items"][VIDEO]
    assert desk.sql("select review_state from evidence_items where id = %s", (video,)) == [("confirmed",)]
    # An approved notice goes out as approved: rejecting one of its items now is refused, and touches no bank.
    csrf = desk.driver.find_element(By.NAME, "csrf").get_attribute("value")
    status, _, _ = desk.fetch(f"/items/{video}/decide", data=f"decision=reject&csrf={csrf}".encode())
    assert status == 302
    assert desk.sql("select review_state from evidence_items where id = %s", (video,)) == [("confirmed",)]
    assert desk.sql("select count(*) from benign_media")[0][0] == 1
    desk.run_worker()
    desk.run_worker()  # a second pass sends nothing more
    assert len(desk.mailbox.messages) == 1
    recipients, message = desk.mailbox.messages[0]
    assert recipients == ["abuse@site.example"]
    assert str(make_header(decode_header(message["Subject"]))) == \
        "Removal request: intimate image posted without consent (reviewed)"
    desk.open(f"/notices/{notice_id}")
    assert desk.driver.find_element(By.ID, "notice-state").text == "발송됨"
    desk.open("/notices")
    desk.shoot("08-notices-sent")


def test_a_removal_appears_in_the_chart(desk: Desk) -> None:
    hopper = desk.state["items"][GRACE_HOPPER]
    desk.open("/removals")
    chart = desk.driver.find_element(By.ID, "removal-chart")
    assert desk.site.origin.removeprefix("http://") in chart.text and "아직 삭제되지 않음" in chart.text
    assert not chart.find_elements(By.CSS_SELECTOR, "rect.median")
    desk.shoot("09-removals-before")

    desk.site.remove("/board/2")
    desk.site.remove("/img/2.jpg")
    desk.sql("update evidence_items set next_check_at = now() where id = %s", (hopper,))
    desk.sql("update evidence_items set next_check_at = now() where removal_state = 'notified'")
    counts = desk.run_worker()
    assert counts.get("check_removed") == 1 and counts.get("check_still_up") == 1, counts  # the video is up
    desk.open("/removals")
    chart = desk.driver.find_element(By.ID, "removal-chart")
    assert chart.find_elements(By.CSS_SELECTOR, "rect.median")  # the site's bar: time to removal
    assert "삭제 1/2" in chart.text and "게시 중 1" in chart.text
    assert "삭제됨" in desk.driver.find_element(By.CSS_SELECTOR, "tr.removal-removed").text
    assert "게시 중" in desk.driver.find_element(By.CSS_SELECTOR, "tr.removal-still_up").text
    status, body, headers = desk.fetch("/removals.csv")
    assert status == 200 and headers["Content-Type"].startswith("text/csv") and b",2,1,1,0," in body
    desk.shoot("10-removals-after")


def test_a_running_crawl_shows_its_progress(desk: Desk) -> None:
    """The crawler stores its figures every few seconds (ingest.progress); the console shows them."""
    desk.sql("insert into crawl_jobs (id, config, created_by, hosts) values ('crawl-progress', '{}', 'crawler-1',"
             " '{a.example,b.example}')")
    figures = CrawlStats(pages=17, media=9, posts=12, matches=2, failed=1, skipped={"naver web: no key": 4})
    with open_pool(desk.database_url, max_size=1) as pool:
        Progress("crawl-progress", pool).tick(figures, 75.0)
    desk.open("/crawls")
    row = desk.driver.find_element(By.ID, "crawl-crawl-progress")
    cells = [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
    assert cells[1:6] == ["실행 중", "17", "9", "2", "1 · 4건 건너뜀"] and cells[6] == "2", cells
    assert "17 pages, 9 media, 12 posts, 2 matches, 1 errors, 4 skipped; 0.23 pages/s" in row.text
    assert "1:15 elapsed" in row.text


def test_a_notice_stuck_in_sending_is_resolved_by_an_officer(desk: Desk) -> None:
    # As a crash between claiming and sending leaves it: the worker will not retry it blindly.
    notice_id = desk.sql("update notices set state = 'sending' where state = 'sent' returning id")[0][0]
    message_id = desk.mailbox.messages[0][1]["Message-ID"]
    desk.run_worker()
    assert len(desk.mailbox.messages) == 1
    desk.open(f"/notices/{notice_id}")
    assert desk.driver.find_element(By.ID, "notice-state").text == "발송 중"
    desk.submit(desk.driver.find_element(By.CSS_SELECTOR, "button[name=delivered][value=no]"))
    assert desk.driver.find_element(By.ID, "notice-state").text == "승인됨"
    desk.run_worker()
    assert len(desk.mailbox.messages) == 2
    assert desk.mailbox.messages[1][1]["Message-ID"] == message_id  # the same notice, recognisably
    assert desk.sql("select actor from audit_log where action = 'ResolveSending'") == [("test-officer",)]


def test_open_a_case_upload_a_reference_and_forget_it(desk: Desk, corpus: Path, tmp_path: Path) -> None:
    desk.open("/cases")
    desk.driver.find_element(By.ID, "new-case-id").send_keys(NEW_CASE)
    desk.submit(desk.driver.find_element(By.ID, "open-case"))
    desk.wait(expected_conditions.url_contains(f"/cases/{NEW_CASE}"))
    # The victim's photo: everything crawled so far is searched at once (the post on /board/3 is still up).
    reference = tmp_path / "reference.jpg"
    reference.write_bytes((corpus / "images" / ASTRONAUT).read_bytes())
    desk.driver.find_element(By.ID, "media").send_keys(str(reference))
    desk.submit(desk.driver.find_element(By.ID, "upload"))
    results = desk.wait(expected_conditions.presence_of_element_located((By.ID, "upload-results")))
    assert "참조 #" in results.text and "이미 발견됨" in results.text
    hits = results.find_elements(By.CSS_SELECTOR, "li.hit")
    assert any(desk.site.url("/board/3") in h.text for h in hits)
    assert desk.sql("select created_by from reference_media where case_id = %s", (NEW_CASE,)) == [("test-officer",)]
    desk.shoot("11-case-upload")

    desk.driver.find_element(By.ID, "confirm-case-id").send_keys("wrong-id")
    desk.submit(desk.driver.find_element(By.ID, "forget"))
    assert "정확히" in desk.flash()
    assert desk.sql("select count(*) from reference_media where case_id = %s", (NEW_CASE,))[0][0] == 1
    desk.driver.find_element(By.ID, "confirm-case-id").send_keys(NEW_CASE)
    desk.submit(desk.driver.find_element(By.ID, "forget"))
    desk.wait(expected_conditions.url_contains("/cases"))
    assert f"사건 {NEW_CASE} 삭제" in desk.flash()
    assert not desk.driver.find_elements(By.ID, f"case-{NEW_CASE}")
    assert desk.sql("select count(*) from cases where id = %s", (NEW_CASE,))[0][0] == 0
    assert desk.sql("select actor from audit_log where action = 'ForgetCase' and target like %s",
                    (f"%{NEW_CASE}%",)) == [("test-officer",)]
    desk.shoot("12-cases")


def test_english_switch(desk: Desk) -> None:
    desk.open("/queue?show=all")
    desk.submit(desk.driver.find_element(By.ID, "lang-en"))
    desk.wait(expected_conditions.url_contains("/queue"))
    text = desk.driver.find_element(By.TAG_NAME, "body").text
    assert "Review queue" in text and "Rejected" in text and "Confirmed" in text
    assert not desk.driver.find_elements(By.CSS_SELECTOR, "form.decide")  # both items are decided
    desk.shoot("13-queue-english")
    desk.open("/removals")
    assert "Time to removal per site" in desk.driver.find_element(By.ID, "removal-chart").text
    desk.submit(desk.driver.find_element(By.ID, "lang-ko"))
    desk.wait(expected_conditions.url_contains("/removals"))
    assert "삭제 현황" in desk.driver.find_element(By.TAG_NAME, "h1").text


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href", "action") and value]


def test_pages_need_nothing_from_outside_the_machine(desk: Desk) -> None:
    notice_id = desk.sql("select max(id) from notices")[0][0]
    pages = ["/queue?show=all", f"/items/{desk.state['items'][GRACE_HOPPER]}", "/notices", f"/notices/{notice_id}",
             "/removals", "/cases", f"/cases/{CASE}"]
    for path in pages:
        desk.open(path)
        resources = desk.driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)")
        assert resources and all(r.startswith(desk.base + "/") for r in resources), (path, resources)
        status, body, headers = desk.fetch(path)
        assert status == 200 and "default-src 'none'" in headers["Content-Security-Policy"]
        assert headers["Cache-Control"] == "no-store"
        links = _Links()
        links.feed(body.decode())
        outside = [u for u in links.urls if re.match(r"^(https?:)?//", u)]
        assert not outside, (path, outside)


def test_sessions_and_forms_are_guarded(desk: Desk) -> None:
    item_id = desk.state["items"][GRACE_HOPPER]
    status, _, headers = desk.fetch("/queue", cookies=False)
    assert status == 302 and "/login" in headers["Location"]
    status, _, _ = desk.fetch(f"/items/{item_id}/thumb", cookies=False)
    assert status == 302  # no picture without a session
    status, _, _ = desk.fetch(f"/items/{item_id}/decide", data=b"decision=reject", cookies=False)
    assert status == 401
    status, body, _ = desk.fetch(f"/items/{item_id}/decide", data=b"decision=reject&csrf=forged")
    assert status == 400 and b"CSRF" in body
    status, body, _ = desk.fetch("/login?next=//evil.example/")
    assert status == 200 and b'value="/queue"' in body  # after log-in: our queue, never another site
    desk.submit(desk.driver.find_element(By.ID, "logout"))
    desk.wait(expected_conditions.url_contains("/login"))
    desk.open("/queue")
    assert "/login" in desk.driver.current_url


def test_the_console_command_serves_until_stopped(database_url: str, tmp_path: Path) -> None:
    key = tmp_path / "evidence.key"
    port = free_port()
    command = [sys.executable, "-m", "jiwoom.cli", "console", "--database-url", database_url, "--data-dir",
               str(tmp_path), "--listen", f"127.0.0.1:{port}"]
    env = {**os.environ, "JIWOOM_EVIDENCE_KEY_FILE": str(key)}
    refused = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, timeout=120)
    assert refused.returncode != 0 and b"start jiwoom serve once first" in refused.stderr  # no key: no console
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=5) as response:
                    assert response.status == 200 and "상담원 로그인" in response.read().decode()
                    break
            except urllib.error.URLError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"console did not start: {process.stdout.read().decode()[-3000:]}")  # type: ignore
                time.sleep(0.3)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
