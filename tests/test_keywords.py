"""Keyword expansion and the obfuscation normaliser, with the real multilingual USE model (loaded once here)."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest

from ingest.keywords import Encoder, Expansion, Lexicon, agglomerate, expand, prompt_units, score_text
from ingest.normalise import Normaliser, compose_jamo, split_syllable

SCHOOL_LEAK = "학교 유출 영상, 한국 커뮤니티에 올라옴"
EX_PARTNER = "헤어진 연인이 몰래 찍은 영상 유포"
WEATHER = "오늘 날씨가 좋네요 2026년 11월"


@pytest.fixture(scope="module")
def normaliser() -> Normaliser:
    return Normaliser.load()


@pytest.fixture(scope="module")
def lexicon() -> Lexicon:
    return Lexicon.load()


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder.load()


@pytest.fixture(scope="module")
def school_leak(lexicon: Lexicon, encoder: Encoder, normaliser: Normaliser) -> Expansion:
    return expand(SCHOOL_LEAK, lexicon, encoder, normaliser)


# --- normaliser --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["야동", "야 동", "야*동", "ㅇㅑ동", "야.동", "야♡동", "야_동", "야ㆍ동",
                                      "ㅇ ㅑ 동", "ㅇ ㅑ동", "야ㄷㅗㅇ", "ㅇㅑㄷㅗㅇ", "oㅑ동", "야\u200b동",
                                      "\uffb7\uffc4동"])  # the last: halfwidth ㅇ ㅑ
def test_korean_spellings_normalise_to_one_form(normaliser: Normaliser, spelling: str) -> None:
    assert normaliser.normalise(spelling) == normaliser.normalise("야동") == "야동"


@pytest.mark.parametrize("spelling", ["porn", "p0rn", "P.0.R.N", "p o r n", "ｐｏｒｎ", "pоrn", "PORN"])
def test_latin_spellings_normalise_to_one_form(normaliser: Normaliser, spelling: str) -> None:
    assert normaliser.normalise(spelling) == "porn"  # "pоrn" has a Cyrillic о, "ｐｏｒｎ" is fullwidth


def test_leetspeak_folds_i_and_l_together(normaliser: Normaliser) -> None:
    # "1" stands for i or l, so both letters share one comparison form
    assert normaliser.normalise("l34k3d") == normaliser.normalise("leaked") == normaliser.normalise("LEAKED")
    assert normaliser.normalise("sch00lg1rl") == normaliser.normalise("schoolgirl")


def test_ordinary_text_keeps_its_numbers_and_words(normaliser: Normaliser) -> None:
    assert normaliser.normalise(WEATHER) == "오늘날씨가좋네요2026년11월"
    assert normaliser.normalise_spaced(WEATHER) == "오늘 날씨가 좋네요 2026년 11월"
    # digits next to a Latin word but not between two letters are real numbers
    assert normaliser.normalise_spaced("mp4 4k 1080p x264 top10") == "mp4 4k 1080p x264 top10"
    # loose jamo never attach to a composed syllable
    assert normaliser.normalise("하ㅋㅋ") == "하ㅋㅋ"
    assert normaliser.normalise_spaced("하ㅋㅋ ㅠㅠ") == "하ㅋㅋ ㅠㅠ"
    assert normaliser.normalise("Всё порно") == "всёпорно"  # an all-Cyrillic word is not folded to Latin
    assert normaliser.normalise_spaced("16 years old", fold=False) == "16 years old"


def test_decomposed_and_halfwidth_korean(normaliser: Normaliser) -> None:
    assert normaliser.normalise(unicodedata.normalize("NFD", "야동 닭이")) == "야동닭이"  # macOS file names


def test_jamo_arithmetic_round_trips_every_syllable() -> None:
    for code in range(0xAC00, 0xD7A4):
        syllable = chr(code)
        assert compose_jamo(split_syllable(syllable)) == syllable
    assert split_syllable("닭") == "ㄷㅏㄺ"
    assert compose_jamo("ㄷㅏㄹㄱㅇㅣ") == "닭이"  # a split compound final
    assert compose_jamo("ㄱㅗㅏㅈㅏ") == "과자"  # a split compound vowel
    assert compose_jamo("ㄷㅏㄹㄱㅏ") == "달가"  # a consonant before a vowel starts the next syllable


def test_obfuscations_cover_the_tricks_and_normalise_back(normaliser: Normaliser) -> None:
    variants = normaliser.obfuscations("야동")
    for expected in ("야 동", "야*동", "ㅇㅑ동", "야.동", "oㅑ동"):
        assert expected in variants
    assert "p0rn" in normaliser.obfuscations("porn")
    assert "l34k3d" in normaliser.obfuscations("leaked")
    for term in ("야동", "몰카", "불법촬영", "국산 야동", "leaked", "hidden cam", "盗撮", "전여친", "여고생"):
        got = normaliser.obfuscations(term)
        assert got, term
        assert len(got) <= normaliser.rules.generate.max_per_term
        for v in got:
            assert v != term
            assert normaliser.normalise(v) == normaliser.normalise(term), (term, v)


def test_officer_rules_file_is_read(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("fillers: ['ㅡ']\nlatin_lookalikes: {x: ['%']}\ngenerate: {symbols: {separators: ['ㅡ']}}\n",
                     encoding="utf-8")
    custom = Normaliser.load(rules)
    assert custom.normalise("sE%y") == "sexy"
    assert custom.normalise("야ㅡ동") == "야동"
    assert custom.obfuscations("야동") == ["야ㅡ동"]


# --- expansion ---------------------------------------------------------------------------------------------------


def _kinds(expansion: Expansion) -> set[str]:
    return {k.kind for k in expansion.keywords}


def test_korean_prompt_expands_to_synonyms_slang_translations_youth_and_obfuscations(
        school_leak: Expansion, normaliser: Normaliser) -> None:
    e = school_leak
    assert e.language == "ko"
    assert e.concerns_minors, e.minors_reason
    assert _kinds(e) == {"prompt", "synonym", "slang", "translation", "youth", "obfuscation"}
    by_kind = {kind: {k.text for k in e.keywords if k.kind == kind} for kind in _kinds(e)}
    assert {"유출", "학교"} <= by_kind["prompt"]
    assert by_kind["synonym"] & {"유출본", "영상 유출", "유출 사진"}
    assert by_kind["slang"] & {"야동", "국산", "ㅇㄷ"}
    assert {k.text for k in e.keywords if k.kind == "translation" and k.language == "en"} & {"leaked", "leaked video"}
    assert {"교복", "여고생"} <= by_kind["youth"]
    assert by_kind["youth"] & {"school uniform", "schoolgirl"}
    assert by_kind["obfuscation"] & {"ㅇㅠ출", "유 출", "유*출"}

    # ranked, and every obfuscated spelling maps back to a keyword the matcher knows
    scores = [k.score for k in e.keywords]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 < s <= 1.0 for s in scores)
    plain_forms = {k.normalised for k in e.keywords if k.kind != "obfuscation"}
    for k in e.keywords:
        assert k.normalised == normaliser.normalise(k.text)
        if k.kind == "obfuscation":
            assert normaliser.normalise(k.text) in plain_forms, k.text
    assert len({k.text for k in e.keywords}) == len(e.keywords)
    assert e.patterns and all(p.pattern for p in e.patterns)  # school-name patterns for scoring


def test_expansion_is_deterministic(school_leak: Expansion, lexicon: Lexicon, encoder: Encoder,
                                    normaliser: Normaliser) -> None:
    again = expand(SCHOOL_LEAK, lexicon, encoder, normaliser)
    assert again.keywords == school_leak.keywords
    assert again.concepts == school_leak.concepts


def test_prompt_without_minors_gets_no_youth_keywords(lexicon: Lexicon, encoder: Encoder,
                                                      normaliser: Normaliser) -> None:
    e = expand(EX_PARTNER, lexicon, encoder, normaliser)
    assert not e.concerns_minors, e.minors_reason
    youth = {c.id for c in lexicon.concepts if c.youth}
    assert not [k for k in e.keywords if k.kind == "youth" or k.concept in youth]
    assert not e.patterns
    texts = set(e.texts())
    assert "revenge_ex_partner" in dict(e.concepts)
    assert texts & {"전여친", "전 연인", "리벤지 포르노"}
    assert texts & {"몰카", "몰래카메라", "불법촬영"}


def test_minors_from_pattern_or_meaning(lexicon: Lexicon, encoder: Encoder, normaliser: Normaliser) -> None:
    by_pattern = expand("서울여고 영상 돌아다님", lexicon, encoder, normaliser)
    assert by_pattern.concerns_minors and "pattern" in by_pattern.minors_reason
    assert "서울여고" in by_pattern.texts("prompt")
    by_meaning = expand("teenage girl video leaked", lexicon, encoder, normaliser)
    assert by_meaning.concerns_minors, by_meaning.minors_reason
    adults = expand("대학교 축제 몰카", lexicon, encoder, normaliser)  # "대학교" holds "학교" but is no school
    assert not adults.concerns_minors, adults.minors_reason


def test_english_prompt_expands_to_korean(lexicon: Lexicon, encoder: Encoder, normaliser: Normaliser) -> None:
    e = expand("leaked hidden camera video", lexicon, encoder, normaliser)
    assert e.language == "en"
    assert not e.concerns_minors
    korean = {k.text for k in e.keywords if k.language == "ko" and k.kind != "obfuscation"}
    assert korean & {"몰카", "몰래카메라", "도촬"}
    assert korean & {"유출", "유출 영상"}
    assert {k.kind for k in e.keywords if k.language == "ko"} >= {"translation", "slang"}


def test_unrelated_prompt_selects_nothing(lexicon: Lexicon, encoder: Encoder, normaliser: Normaliser) -> None:
    for prompt in (WEATHER, "", "   "):
        e = expand(prompt, lexicon, encoder, normaliser)
        assert not e.concerns_minors
        assert e.concepts == []
        assert e.keywords == []


def test_officer_added_lexicon_is_picked_up(tmp_path: Path, encoder: Encoder, normaliser: Normaliser) -> None:
    extra = tmp_path / "officer.yaml"
    extra.write_text(
        "concepts:\n"
        "  - id: gym_filming\n"
        "    description: Hidden cameras in gyms and fitness studios.\n"
        "    youth: false\n"
        "    terms:\n"
        "      ko: [필라테스 몰카, 헬스장 몰카, 요가원 촬영]\n"
        "      en: [gym hidden camera, pilates voyeur]\n"
        "    slang:\n"
        "      ko: [필테 도촬]\n"
        "  - id: leaked_media\n"  # an existing concept gets one more term
        "    slang:\n"
        "      ko: [유출짤]\n",
        encoding="utf-8")
    lexicon = Lexicon.load(extra=[extra])
    assert "gym_filming" in {c.id for c in lexicon.concepts}
    assert "유출짤" in {t.text for t in lexicon.concept("leaked_media").terms}
    e = expand("필라테스 몰카 영상", lexicon, encoder, normaliser)
    assert e.concepts[0][0] == "gym_filming"
    texts = set(e.texts())
    assert {"필라테스 몰카", "헬스장 몰카", "필테 도촬"} <= texts
    assert "gym hidden camera" in texts


def test_prompt_units_and_clustering(encoder: Encoder) -> None:
    units = dict(prompt_units(SCHOOL_LEAK))
    assert units[SCHOOL_LEAK] == 1.0 and units["학교 유출"] == 0.95 and units["학교"] == 0.9
    vecs = encoder.embed(["hidden camera", "숨긴 카메라", "오늘 날씨가 좋네요"])
    labels = agglomerate(vecs, 0.8)
    assert labels[0] == labels[1] != labels[2]  # the translation pair is one cluster


# --- scoring crawled text ----------------------------------------------------------------------------------------


def test_score_text_ranks_obfuscated_title_above_unrelated(school_leak: Expansion, encoder: Encoder,
                                                           normaliser: Normaliser) -> None:
    suspect = score_text("[국산] ㅇㅑ동 유 출 모음 서울여고 교복", school_leak, normaliser, encoder)
    other = score_text(WEATHER, school_leak, normaliser, encoder)
    assert {"야동", "유출", "교복", "서울여고"} <= set(suspect.hits)
    assert other.hits == []
    assert 0.0 <= other.score < 0.2 < 0.8 < suspect.score <= 1.0
    assert suspect.similarity > other.similarity
    # without an encoder: hits only
    lexical = score_text("야*동 풀영상 링크", school_leak, normaliser)
    assert lexical.similarity == 0.0 and lexical.hits and lexical.score > 0.4


def test_ordinary_text_makes_no_false_hits(school_leak: Expansion, normaliser: Normaliser) -> None:
    for text in (WEATHER, "최고1위 맛집 추천", "대학교 축제 사진", "15세 관람가 영화", "10대 뉴스 2025",
                 "intel cpu 4k mp4 canteen", "User@Example.com 문의"):
        assert score_text(text, school_leak, normaliser).hits == [], text
    assert score_text("서울 고1 여학생 영상", school_leak, normaliser).hits  # a grade is a youth hit


def test_encoder_caches_and_loads_once(encoder: Encoder, lexicon: Lexicon, normaliser: Normaliser) -> None:
    assert 0.0 < encoder.load_seconds < 10.0
    assert encoder.index(lexicon, normaliser) is encoder.index(lexicon, normaliser)
    vec = encoder.embed(["몰카"])
    assert vec.shape == (1, 512) and abs(float(vec[0] @ vec[0]) - 1.0) < 1e-4
