"""Geometric verification (server.matching.verify) on real ORB features, and the calibrated decision
(server.calibration, server.matching.decisions.Assessor)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from bench import transforms
from bench.accuracy import transformed
from jiwoom.api.errors import InvalidInput
from server.calibration import Calibration, Tail, odds, p_false
from server.config import MatchSettings
from server.inference import Inference
from server.inference.features import LocalFeatures, MediaFeatures
from server.matching.decisions import Assessor, MatchResult
from server.matching.verify import Outcome, Verdict, Zooms, local_size, verify
from server.models.local_features import spread

LOCAL = frozenset({"local"})


def local_of(inference: Inference, image: Image.Image) -> tuple[LocalFeatures, tuple[float, float]]:
    media: MediaFeatures = inference.media_features(transforms.encode(image, "JPEG", 90), LOCAL)
    local = media.frames[0].local
    assert local is not None
    return local, local_size(media.frame_size)


def textured_references(corpus, inference, count: int = 3) -> list[Image.Image]:
    """Corpus pictures with enough texture to verify (flat ones are unverifiable, tested apart)."""
    pictures = []
    for path in sorted((corpus / "images").glob("*.jpg")):
        image = transforms.load(path)
        local, _ = local_of(inference, image)
        if len(local.side(False)) >= 400:
            pictures.append(image)
        if len(pictures) == count:
            return pictures
    pytest.fail("the corpus has too few textured pictures")


@pytest.mark.parametrize("transform", ["crop_80", "rotate", "text_overlay", "flip", "stretch"])
def test_a_copy_is_verified_through_crop_rotation_captions_mirror_and_stretch(corpus, inference, transform):
    """Most copies verify; not all do (a caption over a repetitive texture can leave too few agreeing keypoints),
    which is why verification only decides the grey zone, and a rare score alone still matches."""
    verdicts = []
    for seed, reference in enumerate(textured_references(corpus, inference, 4)):
        target, target_size = local_of(inference, reference)
        query, query_size = local_of(inference, transformed(transform, reference, seed))
        verdicts.append(verify(query, query_size, target, target_size))
    verified = [v for v in verdicts if v.outcome is Outcome.VERIFIED]
    assert len(verified) >= 3, verdicts
    assert all(v.mirrored == (transform == "flip") for v in verified)


def test_a_paste_into_a_page_is_verified_inside_the_matched_box(corpus, inference):
    reference = textured_references(corpus, inference, 1)[0]
    page = Image.new("RGB", (reference.width * 2, reference.height * 2), (240, 240, 240))
    noise = np.random.default_rng(3).integers(0, 255, (page.height, page.width // 2, 3), np.uint8)
    page.paste(Image.fromarray(noise), (page.width // 2, 0))  # busy page content beside the picture
    page.paste(reference, (0, reference.height // 2))
    target, target_size = local_of(inference, reference)
    query, query_size = local_of(inference, page)
    box = (0.0, 0.25, 0.5, 0.75)
    verdict = verify(query, query_size, target, target_size, box)
    assert verdict.outcome is Outcome.VERIFIED, verdict


def pasted_into_a_screen(picture: Image.Image, seed: int) -> tuple[Image.Image, tuple[float, float, float, float]]:
    """`picture` at 40 % of a synthetic page's width (bench.screens: a chat, board or app screen with its text),
    and the box it covers, as a matched region's box: fractions of the page."""
    from bench.screens import screen

    _, page = screen(8_000_000 + seed)
    page = page.convert("RGB")
    scale = 0.4 * page.width / picture.width
    small = picture.resize((round(picture.width * scale), round(picture.height * scale)), Image.LANCZOS)
    left, top = page.width // 4, page.height // 4
    page.paste(small, (left, top))
    box = (left / page.width, top / page.height, (left + small.width) / page.width,
           min(1.0, (top + small.height) / page.height))
    return page, box


def zooms_of(inference: Inference, image: Image.Image) -> Zooms:
    frames = inference.sample(transforms.encode(image, "JPEG", 90))["frames"]
    return Zooms(lambda: frames, inference.local_of_regions)


def test_a_picture_pasted_small_into_a_screen_is_verified_on_a_closer_look(corpus, inference):
    """The page's keypoints hold few of the picture's, and at a coarser scale than the reference's: on them alone
    most such copies are rejected. The matched box's crop, described on its own, verifies them."""
    plain, closer = [], []
    for seed, reference in enumerate(textured_references(corpus, inference, 4)):
        target, target_size = local_of(inference, reference)
        page, box = pasted_into_a_screen(reference, seed)
        query, query_size = local_of(inference, page)
        plain.append(verify(query, query_size, target, target_size, box))
        closer.append(verify(query, query_size, target, target_size, box, zooms_of(inference, page).of(0)))
    assert sum(v.outcome is Outcome.VERIFIED for v in plain) <= 2, plain
    assert all(v.outcome is Outcome.VERIFIED for v in closer), closer
    assert all(v.zoomed for v, p in zip(closer, plain, strict=True) if p.outcome is not Outcome.VERIFIED)
    assert max(v.inliers for v in closer) > 2 * max(v.inliers for v in plain)


def test_the_closer_look_still_rejects_another_picture_in_the_same_screen(corpus, inference):
    first, second = textured_references(corpus, inference, 2)
    target, target_size = local_of(inference, first)
    page, box = pasted_into_a_screen(second, 0)
    query, query_size = local_of(inference, page)
    verdict = verify(query, query_size, target, target_size, box, zooms_of(inference, page).of(0))
    assert verdict.outcome is not Outcome.VERIFIED, verdict
    # and a screen around the reference's own page is no copy of a picture pasted into it: the closer look is
    # for boxes that are a small part of the frame only
    whole = verify(query, query_size, target, target_size, (0.0, 0.0, 1.0, 1.0), zooms_of(inference, page).of(0))
    assert not whole.zoomed


def test_unrelated_pictures_sharing_a_flat_background_and_a_textured_strip_are_rejected(corpus, inference):
    """Two different pictures on the same chrome: a flat page colour and the same busy header strip (a logo bar,
    an app's navigation). Many keypoints match, under one map, but only over the strip."""
    first, second = textured_references(corpus, inference, 2)
    strip = Image.fromarray(np.random.default_rng(7).integers(0, 255, (90, 640, 3), np.uint8))

    def page(picture: Image.Image) -> Image.Image:
        canvas = Image.new("RGB", (640, 900), (250, 250, 250))
        canvas.paste(strip, (0, 0))
        canvas.paste(picture.resize((600, 600)), (20, 200))
        return canvas

    target, target_size = local_of(inference, page(first))
    query, query_size = local_of(inference, page(second))
    verdict = verify(query, query_size, target, target_size)
    assert verdict.outcome is Outcome.REJECTED
    assert verdict.inliers > 0  # the strip did match: it is the coverage that rejects it
    again, again_size = local_of(inference, page(first))  # the same page re-encoded is a copy
    assert verify(again, again_size, target, target_size).outcome is Outcome.VERIFIED


def test_unrelated_corpus_pictures_are_not_verified(corpus, inference):
    pictures = textured_references(corpus, inference)
    features = [local_of(inference, p) for p in pictures]
    for i, (query, query_size) in enumerate(features):
        for j, (target, target_size) in enumerate(features):
            if i != j:
                assert verify(query, query_size, target, target_size).outcome is not Outcome.VERIFIED


def test_a_flat_picture_is_unverifiable_not_rejected(inference):
    flat = Image.new("RGB", (400, 300), (120, 130, 140))
    target, target_size = local_of(inference, flat)
    assert verify(target, target_size, target, target_size).outcome is Outcome.UNVERIFIABLE


def test_keypoints_are_spread_over_the_frame():
    rng = np.random.default_rng(0)
    crowded = np.column_stack([rng.uniform(0, 100, 900), rng.uniform(0, 20, 900), np.ones(900), rng.random(900)])
    sparse = np.column_stack([rng.uniform(0, 100, 100), rng.uniform(20, 100, 100), np.ones(100), rng.random(100)])
    points = np.concatenate([crowded, sparse]).astype(np.float32)  # text along the top takes 90 % of the corners
    kept = spread(points, 100, 100, 300)
    assert len(kept) == 300
    assert (kept >= 900).sum() >= 80  # most of the picture's own keypoints survive


# -- the calibrated decision ----------------------------------------------------------------------------------


def calibration() -> Calibration:
    rng = np.random.default_rng(1)
    bank = rng.normal(size=(64, 512)).astype(np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    return Calibration("test", 4, {"embedding": Tail(2.0, -20.0, 0.1, False), "face": Tail(-8.0, -10.0, 0.45, True)},
                       0.01, "test", {"embedding": bank.astype(np.float16).astype(np.float32)})


def result(signal: str, score: float, normalised: float | None = None) -> MatchResult:
    return MatchResult(owner=1, signal=signal, score=score, threshold=0.6, query_segment=(0, 0),
                       target_segment=(0, 0), matched_frames=1, query_box=(0, 0, 1, 1), faces=(),
                       normalised=normalised)


def test_expected_false_matches_grow_with_the_number_of_references():
    tails = calibration()
    small = tails.expected_false("embedding", 0.3, 300)
    large = tails.expected_false("embedding", 0.3, 30_000)
    assert math.isclose(large / small, 100, rel_tol=1e-6)
    assert tails.expected_false("embedding", 0.05, 300) == 300  # outside the fitted tail: never evidence
    assert tails.expected_false("face", 0.3, 100) < tails.expected_false("face", 0.4, 100)  # distances
    assert math.isinf(tails.expected_false("pdq", 10, 100))  # no tail: never kept by calibration


def test_the_assessor_keeps_rare_scores_verifies_the_grey_zone_and_drops_the_rest():
    settings = MatchSettings(false_matches_per_query=0.001, verify_up_to=0.5)
    verdicts: list[Outcome] = []

    def verifier(_result: MatchResult) -> Verdict:
        verdicts.append(Outcome.VERIFIED)
        return Verdict(Outcome.VERIFIED, 40, 0.8)

    assess = Assessor(calibration(), 1000, settings, verifier)
    # E = 1000 * 10 ** (2 - 20 s): s = 0.4 -> 1e-3 (kept unverified); s = 0.3 -> 0.1 (grey); s = 0.2 -> 10 (dropped)
    kept = assess([result("embedding", 0.9, 0.41), result("embedding", 0.7, 0.3), result("embedding", 0.65, 0.2)])
    assert [k.normalised for k in kept] == [0.41, 0.3]
    assert kept[0].verification == "" and kept[1].verification == "verified"
    assert kept[1].expected_false == pytest.approx(0.1 * 0.01)
    assert kept[1].p_false == pytest.approx(p_false(0.1 * 0.01))
    assert len(verdicts) == 1

    rejecting = Assessor(calibration(), 1000, settings, lambda _r: Verdict(Outcome.REJECTED, 5, 0.1))
    assert [k.normalised for k in rejecting([result("embedding", 0.7, 0.3)])] == []
    # faces are not verified by geometry: kept up to face_up_to on the score alone
    faces = Assessor(calibration(), 1000, MatchSettings(face_up_to=0.05), verifier)
    assert [k.score for k in faces([result("face", 0.44), result("face", 0.3)])] == [0.3]
    assert len(verdicts) == 1


def test_background_offsets_are_the_kth_best_background_similarity():
    tails = calibration()
    bank = tails.banks["embedding"]
    row = bank[:1]
    offset = tails.offsets("embedding", row)[0]
    similarities = np.sort(row @ bank.T)[0][::-1]
    assert offset == pytest.approx(similarities[3], abs=1e-3)  # k = 4: itself first, then three others
    assert tails.offsets("embedding_fast", row)[0] == 0  # a signal without a bank of its own is not normalised


def test_a_calibration_survives_saving(tmp_path):
    path = tmp_path / "c.npz"
    calibration().save(path)
    loaded = Calibration.load(path)
    assert loaded.tails == calibration().tails and set(loaded.banks) == {"embedding"}
    assert np.allclose(loaded.banks["embedding"], calibration().banks["embedding"], atol=1e-3)
    assert loaded.expected_false("embedding", 0.33, 50) == calibration().expected_false("embedding", 0.33, 50)


def test_a_normalised_signal_is_never_scored_on_its_raw_prior():
    """A prior is in raw cosine; a file that normalises a signal but fitted it no tail has no tail for it."""
    prior = Tail(0.0, -10.0, 0.3, False)
    unnormalised = calibration()
    assert unnormalised.expected_false("embedding_fast", 0.9, 10, prior) < 1e-5
    normalised = Calibration("test", 4, {}, 0.01, "test", {"embedding_fast": unnormalised.banks["embedding"]})
    assert normalised.expected_false("embedding_fast", 0.9, 10, prior) == math.inf


def test_the_packaged_calibration_normalises_both_embeddings_and_fits_them():
    from server.calibration import DEFAULT_PATH, calibration_for, embedding_space
    from server.config import Settings

    packaged = calibration_for(embedding_space(Settings().models), str(DEFAULT_PATH))
    assert packaged is not None
    assert {"embedding", "embedding_fast"} <= set(packaged.banks) and {"embedding", "embedding_fast"} <= set(
        packaged.tails)


def test_odds_read_like_people_say_them():
    assert odds(0.25) == "25 %"
    assert odds(1 / 12_000) == "1 in 12,000"
    assert odds(1e-9).startswith("< 1 in")


# -- precision at scale, small -------------------------------------------------------------------------------


def test_screens_match_no_screen_reference_and_captioned_copies_match_at_ten_thousand_references(corpus, inference):
    """The held-out failure in small: app screenshots among the references made every page screenshot match one.
    Screens and photos are references; other screens and captioned copies of the photos are queries, decided with
    the thresholds of a library of 10,000 references (the packaged calibration). (A photo pasted small into a page
    screenshot is found far less often at that size: bench/RESULTS.md.)"""
    from bench import screens
    from server.calibration import DEFAULT_PATH
    from server.matching.decisions import Thresholds, match_library
    from server.matching.library import Library
    from server.signals import SIGNALS

    settings = MatchSettings()
    calibrated = Calibration.load(DEFAULT_PATH)
    families = frozenset({"pdq", "embedding", "faces", "local"})
    photos = textured_references(corpus, inference, 4)
    references = [screens.screen(seed)[1] for seed in range(10)] + photos
    features = [inference.media_features(transforms.encode(r, "JPEG", 90), families) for r in references]
    library = Library("references")
    for owner, f in enumerate(features):
        library.add(owner, {n: s.reference_vectors(f, settings) for n, s in SIGNALS.items()})
    thresholds = Thresholds.defaults(settings)
    radius = {n: thresholds.of(n) for n in SIGNALS}
    queries = [(None, screens.screen(seed)[1]) for seed in range(900_000, 900_010)]
    queries += [(10 + i, transformed("text_overlay", photo, i)) for i, photo in enumerate(photos)]
    raw_false = calibrated_false = found = 0
    for expected, picture in queries:
        query = inference.media_features(transforms.encode(picture, "JPEG", 90), families)
        vectors = {n: s.query_vectors(query, settings) for n, s in SIGNALS.items()}
        size = local_size(query.frame_size)

        def check(found: MatchResult, query=query, size=size) -> Verdict:
            target = features[found.owner]
            local = query.frames[found.query_frame].local
            assert local is not None and target.frames[0].local is not None
            return verify(local, size, target.frames[0].local, local_size(target.frame_size), found.query_box)

        raw = {r.owner for r in match_library(library, vectors, radius, lambda _o: thresholds, query, settings)}
        assess = Assessor(calibrated, 10_000, settings, check)
        kept = {r.owner for r in match_library(library, vectors, radius, lambda _o: thresholds, query, settings,
                                               assess=assess)}
        assert kept <= raw  # calibration only ever removes
        wanted = set() if expected is None else {expected}
        raw_false += bool(raw - wanted)
        calibrated_false += bool(kept - wanted)
        found += expected is not None and expected in kept
    assert raw_false > 0  # the fixed thresholds alone do fall for these screens: the scene reproduces the failure
    assert calibrated_false == 0, f"{calibrated_false} queries matched a wrong reference ({raw_false} before)"
    assert found >= len(photos) - 1, f"{found} of {len(photos)} captioned copies found"


def test_keypoints_of_given_boxes_are_each_crops_own_and_bad_boxes_are_refused(inference):
    page = Image.fromarray(np.random.default_rng(5).integers(0, 255, (600, 900, 3), np.uint8))
    frames = inference.sample(transforms.encode(page, "PNG"))["frames"]
    boxes = np.array([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]], np.float32)
    first, second = inference.local_of_regions(frames, boxes, np.array([0, 0]))
    for local in (first, second):  # each crop at the keypoints' side: 640 x 427 for a 450 x 300 crop
        assert len(local) > 100
        assert local.keypoints[:, 0].max() > 500 and local.keypoints[:, 1].max() < 430
    for bad, frame in ((np.array([[0.0, 0.0, 1.5, 1.0]]), [0]), (np.array([[0.0, 0.0, 1.0, 1.0]]), [3]),
                       (np.array([[np.nan, 0.0, 1.0, 1.0]]), [0])):
        with pytest.raises(InvalidInput, match="local_features"):
            inference.local_of_regions(frames, bad, np.array(frame))


def test_lost_copies_are_classed_by_their_own_references_best_verdict():
    from bench.lost_copies import lost_class

    own = [MatchResult(3, "embedding", 0.8, 0.6, (0.0, 0.0), (0.0, 0.0), 1, (0.0, 0.0, 1.0, 1.0), ())]
    assert lost_class([], []) == "no candidate"
    assert lost_class(own, []) == "too common (not verified)"
    assert lost_class(own, [Verdict(Outcome.UNVERIFIABLE)]) == "unverifiable"
    assert lost_class(own, [Verdict(Outcome.UNVERIFIABLE), Verdict(Outcome.REJECTED, 30, 0.2, zoomed=True)]) == \
        "rejected, closer look, inliers >= 24"
    assert lost_class(own, [Verdict(Outcome.REJECTED, 8, 0.0)]) == "rejected"
