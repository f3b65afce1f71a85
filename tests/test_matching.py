"""The pure matching logic: segments by temporal voting, per-case thresholds, youth flags, the negative bank."""

from __future__ import annotations

import numpy as np

from server.config import MatchSettings
from server.inference.features import Face, FrameFeatures, MediaFeatures
from server.matching.decisions import Thresholds, decide, redecide_cases
from server.matching.negative_bank import benign_frames, benign_frames_by_case
from server.matching.segments import segments
from server.matching.youth import face_reports
from server.signals import Hits, SignalVectors, whole_frames

SETTINGS = MatchSettings()


def test_a_cut_clip_becomes_one_segment_with_times_in_both_videos() -> None:
    query_times = np.arange(0, 8, 1.0)
    target_times = query_times + 12.0
    found = segments(query_times, target_times, np.full(8, 0.9), np.arange(8), False, SETTINGS)
    assert len(found) == 1
    assert found[0].query == (0.0, 7.0) and found[0].target == (12.0, 19.0)


def test_look_alike_frames_at_other_offsets_do_not_stretch_the_segment() -> None:
    # every query frame also weakly hits frame 50 s of the target (a recurring title card)
    query_times = np.concatenate([np.arange(0, 8, 1.0), np.arange(0, 8, 1.0)])
    target_times = np.concatenate([np.arange(0, 8, 1.0) + 30, np.full(8, 50.0)])
    scores = np.concatenate([np.full(8, 0.9), np.full(8, 0.62)])
    frames = np.concatenate([np.arange(8), np.arange(8)])
    found = segments(query_times, target_times, scores, frames, False, SETTINGS)
    assert found[0].target == (30.0, 37.0) and len(found[0].rows) == 8


def test_a_long_gap_splits_segments_and_drift_is_tolerated() -> None:
    query_times = np.array([0, 1, 2, 3, 20, 21, 22], float)
    target_times = query_times * 1.1 + 5  # 10 % faster re-upload
    found = segments(query_times, target_times, np.full(7, 10.0), np.arange(7), True, SETTINGS)
    assert sorted(s.query for s in found) == [(0.0, 3.0), (20.0, 22.0)]


def rows(n: int, dim: int = 4, frames: list[int] | None = None) -> SignalVectors:
    frames = frames if frames is not None else list(range(n))
    return SignalVectors(np.zeros((n, dim), np.float32), np.array(frames, np.float32), np.zeros((n, 4), np.float32),
                         np.array(frames, np.int32))


def test_decide_applies_each_owners_case_thresholds() -> None:
    queries = {"embedding": rows(2)}
    hits = {"embedding": Hits(np.array([0, 1]), np.array([7, 8]), np.array([0, 0]), np.array([0.7, 0.7], np.float32))}
    strict = Thresholds.defaults(SETTINGS).with_overrides({"embedding": 0.8})
    results = decide(queries, hits, lambda _s, o, _l: np.zeros(len(o), np.float32),
                     lambda owner: strict if owner == 8 else Thresholds.defaults(SETTINGS), None, SETTINGS)
    assert [(r.owner, r.threshold) for r in results] == [(7, SETTINGS.embedding_min_similarity)]


def test_decide_skips_frames_of_benign_media() -> None:
    queries = {"pdq": rows(3)}
    hits = {"pdq": Hits(np.array([0, 1, 2]), np.array([5, 5, 5]), np.array([0, 1, 2]),
                        np.array([3, 4, 5], np.float32))}
    results = decide(queries, hits, lambda _s, o, loc: loc.astype(np.float32), lambda _o: Thresholds.defaults(SETTINGS),
                     None, SETTINGS, excluded_frames={0})
    assert len(results) == 1 and results[0].matched_frames == 2 and results[0].score == 4


def test_a_cases_own_negative_bank_frames_are_skipped_for_its_owners_only() -> None:
    queries = {"pdq": rows(3)}
    # owners 5 (case a) and 6 (case b) both hit all three query frames
    hits = {"pdq": Hits(np.array([0, 1, 2, 0, 1, 2]), np.array([5, 5, 5, 6, 6, 6]), np.array([0, 1, 2, 0, 1, 2]),
                        np.array([3, 4, 5, 3, 4, 5], np.float32))}
    args = (queries, hits, lambda _s, o, loc: loc.astype(np.float32), lambda _o: Thresholds.defaults(SETTINGS),
            None, SETTINGS)
    everywhere = {2}
    first = decide(*args, excluded_frames=everywhere)
    results = redecide_cases(first, *args, everywhere, {"a": {0}, "b": {2}}, {5: "a", 6: "b"}.__getitem__)
    assert [(r.owner, r.matched_frames, r.score) for r in results] == [(5, 1, 4), (6, 2, 3)]


def test_benign_frames_by_case() -> None:
    queries = {"pdq": rows(4, frames=[0, 0, 1, 2])}
    hits = {"pdq": Hits(np.array([1, 2, 3]), np.array([9, 8, 9]), np.array([0, 0, 0]), np.array([0, 1, 2], np.float32))}
    assert benign_frames_by_case(hits, queries, {9: None, 8: "a"}.__getitem__) == {None: {0, 2}, "a": {1}}


def test_benign_frames_are_the_query_frames_hit() -> None:
    queries = {"pdq": rows(4, frames=[0, 0, 1, 2])}
    hits = {"pdq": Hits(np.array([1, 3]), np.array([9, 9]), np.array([0, 0]), np.array([0, 2], np.float32))}
    assert benign_frames(hits, queries) == {0, 2}


def test_whole_frames_keeps_the_first_region_of_each_frame() -> None:
    vectors = rows(5, frames=[0, 0, 0, 1, 1])
    assert whole_frames(vectors).frames.tolist() == [0, 1]


def test_loosest_threshold_is_the_search_radius() -> None:
    base = Thresholds.defaults(SETTINGS)
    radius = base.loosest([base.with_overrides({"pdq": 40, "embedding": 0.5}), base.with_overrides({"face": 0.3})])
    assert radius == {"pdq": 40.0, "embedding": 0.5, "face": SETTINGS.face_max_distance,
                      "embedding_fast": SETTINGS.fast_embedding_min_similarity,
                      "face_sface": SETTINGS.sface_min_similarity, "audio": SETTINGS.audio_min_similarity}


def face(p: float, age: float) -> Face:
    return Face(box=(10, 10, 50, 50), age_mean=age, age_std=5.0, age_p_under19=p)


def test_faces_are_flagged_under_19_by_probability_not_by_mean_alone() -> None:
    features = MediaFeatures((100, 200), 0.0, [FrameFeatures(0, 0.0, faces=[face(0.9, 15), face(0.2, 21),
                                                                            face(0.55, 20)])])
    reports = face_reports(features, SETTINGS)
    assert [r.under_19 for r in reports] == [True, False, True]
    assert reports[0].box == (0.05, 0.1, 0.25, 0.5)  # fractions of the 200x100 frame
    assert [r.age_mean for r in face_reports(features, SETTINGS, only_under_19=True)] == [15, 20]
    assert face_reports(features, MatchSettings(youth_p_under19=0.95), only_under_19=True) == []


def test_no_age_is_read_off_a_face_too_small_or_faint_to_match() -> None:
    """An 11 px face in a re-encoded clip read 14 years old: an age head says nothing at that size."""
    tiny = Face(box=(10, 10, 21, 21), age_mean=14, age_std=5.0, age_p_under19=0.82, score=0.95)
    faint = Face(box=(10, 10, 50, 50), age_mean=14, age_std=5.0, age_p_under19=0.82, score=0.7)
    sure = Face(box=(10, 10, 50, 50), age_mean=14, age_std=5.0, age_p_under19=0.82, score=0.95)
    features = MediaFeatures((100, 200), 0.0, [FrameFeatures(0, 0.0, faces=[tiny, faint, sure])])
    assert [r.box for r in face_reports(features, SETTINGS, only_under_19=True)] == [(0.05, 0.1, 0.25, 0.5)]
    assert len(face_reports(features, MatchSettings(face_min_width=8, face_min_score=0.5))) == 3
