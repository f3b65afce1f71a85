"""A case's identifiers found in obfuscated text by their keyed digests alone (server/matching/identifiers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.matching.identifiers import IdentifierKey, candidates, compose_jamo, generic_found, normal_form, redacted

KEY = IdentifierKey(bytes(range(32)))


@pytest.fixture()
def recorded() -> dict[bytes, str]:
    identifiers = [("name", "김지영"), ("name", "Kim Ji-young"), ("phone", "010-1234-5678"),
                   ("handle", "@jiyoung_k"), ("email", "JiYoung.K@example.com"), ("place", "서울한빛고등학교")]
    return {KEY.record(kind, value): kind for kind, value in identifiers}


@pytest.mark.parametrize(("text", "kinds"), [
    ("김지영 영상 유출", {"name"}),
    ("김 지 영 풀버전", {"name"}),  # spaced
    ("김 지영이 영상", {"name"}),  # spaced, with a particle
    ("ㄱㅣㅁ지영 누군지 앎", {"name"}),  # jamo typed apart
    ("ㄱ ㅣ ㅁ ㅈ ㅣ ㅇ ㅕ ㅇ", {"name"}),
    ("kim ji young leaked", {"name"}),
    ("연락 공일공-1234-5678", {"phone"}),  # digits in Hangul
    ("010 1234 5678 로 연락", {"phone"}),
    ("공일공 일이삼사 오육칠팔", {"phone"}),
    ("+82 10-1234-5678", {"phone"}),
    ("０１０－１２３４－５６７８", {"phone"}),  # full-width
    ("인스타 @jiyoung_k 에서 퍼옴", {"handle"}),
    ("메일 jiyoung.k@example.com", {"email"}),
    ("서울 한빛 고등학교 2학년 김.지.영", {"place", "name"}),
])
def test_obfuscated_forms_of_a_cases_identifiers_are_found(recorded: dict[bytes, str], text: str,
                                                           kinds: set[str]) -> None:
    assert KEY.check(text, recorded) == kinds


@pytest.mark.parametrize("text", [
    "김지연 영상",  # another person's name
    "이지영 010-9999-8888",
    "kim jiyeon",
    "@jiyoung_kk",
    "010-1234-5679",
    "지영이 김밥 먹음",  # the syllables, not in that order
    "김지 영화 봤음",  # spaced words that only run together into the name
])
def test_other_peoples_identifiers_are_not(recorded: dict[bytes, str], text: str) -> None:
    assert KEY.check(text, recorded) == set()


def test_digests_depend_on_the_key_and_hold_no_clear_text() -> None:
    digest = KEY.record("phone", "010-1234-5678")
    assert digest != IdentifierKey(bytes(32)).record("phone", "010-1234-5678")
    assert b"1234" not in digest and len(digest) == 32
    with pytest.raises(ValueError, match="32 bytes"):
        IdentifierKey(b"short")
    with pytest.raises(ValueError, match="nothing"):
        KEY.record("phone", "not a number")
    with pytest.raises(ValueError, match="unknown identifier kind"):
        normal_form("address", "x")


def test_jamo_compose_and_the_candidates_stay_bounded() -> None:
    assert compose_jamo("ㅎㅏㄴㄱㅡㄹ") == "한글"
    assert compose_jamo("ㅋㅋㅋ") == "ㅋㅋㅋ"  # consonants alone stay as they are
    long_text = "가" * 200_000
    assert sum(1 for _ in candidates(long_text)) < 1_200_000  # cut at MAX_TEXT characters


def test_found_spans_point_at_the_text_as_written(recorded: dict[bytes, str]) -> None:
    text = "제목: ㄱㅣㅁ지영 연락 공일공-1234-5678 !"
    found = KEY.find(text, recorded)
    assert sorted(text[start:end] for _, (start, end) in found) == ["ㄱㅣㅁ지영", "공일공-1234-5678"]
    assert redacted(text, found) == "제목: [name] 연락 [phone] !"


@pytest.mark.parametrize(("text", "kinds"), [
    ("연락처 010.9876.5432", {"phone"}),
    ("주민번호 900101-2345678", {"rrn"}),
    ("메일 someone@example.org", {"email"}),
    ("카톡 아이디: hello_12", {"messenger"}),
    ("오픈채팅 open.kakao.com/o/abcDEF1", {"messenger"}),
    ("텔레 @tgname99", {"messenger"}),
])
def test_generic_patterns_on_suspected_posts(text: str, kinds: set[str]) -> None:
    found = generic_found(text)
    assert {kind for kind, _ in found} == kinds
    for kind, (start, end) in found:
        assert f"[{kind}]" in redacted(text, found) and text[start:end] not in redacted(text, found)


@pytest.mark.parametrize("text", ["2024년 12월 3일 업로드", "조회수 1,234,567", "주문번호 991399-1234567"])
def test_dates_counts_and_invalid_numbers_are_not_generic_hits(text: str) -> None:
    assert generic_found(text) == []


def test_a_posts_findings_are_reused_for_its_next_media_item_until_the_identifiers_change(tmp_path: Path) -> None:
    from server.config import ServiceSettings, Settings
    from server.service.identifiers import CaseIdentifiers
    from server.storage.store import SourceRecord

    identifiers = CaseIdentifiers(Settings(service=ServiceSettings(data_dir=str(tmp_path))))
    identifiers._key = KEY
    identifiers._recorded = {KEY.record("name", "김지영"): [("c1", "name")]}
    source = SourceRecord(url="u", title="김 지 영 풀버전", text="연락 010-5555-6666", suspected=True)
    first = identifiers.examine(source, [])
    assert first == identifiers.examine(source, [])  # the second media item of the post: the same findings
    assert {(e.case_id, e.kind) for e in first.exposures} == {("c1", "name"), (None, "phone")}
    identifiers.forget("c1")  # a new map: the kept findings no longer apply
    after = identifiers.examine(source, [])
    assert {(e.case_id, e.kind) for e in after.exposures} == {(None, "phone")}
    assert after.source.title == "김 지 영 풀버전"
