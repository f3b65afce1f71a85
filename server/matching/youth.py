"""Youth triage: the faces in matched frames with their estimated ages, and which look under 19.

A flag for a person to check, never a decision: the age head's P(under 19) against `youth_p_under19`, on
faces the matcher would use (an age read off a face a dozen pixels wide is noise).
"""

from __future__ import annotations

from dataclasses import dataclass

from server.config import MatchSettings
from server.inference.features import MediaFeatures
from server.signals.face import face_box_fraction, usable_face

MAX_FACES_PER_MATCH = 16


@dataclass(frozen=True)
class FaceReport:
    timestamp: float
    box: tuple[float, float, float, float]  # fractions of the frame
    age_mean: float
    age_std: float
    p_under19: float
    under_19: bool


def face_reports(features: MediaFeatures, settings: MatchSettings, frames: set[int] | None = None,
                 only_under_19: bool = False) -> list[FaceReport]:
    """Faces with an age estimate, in the given frames (all frames when None)."""
    reports = []
    for frame in features.frames:
        if frames is not None and frame.index not in frames:
            continue
        for face in frame.faces:
            if face.age_p_under19 is None or not usable_face(face, settings):
                continue
            under = face.age_p_under19 >= settings.youth_p_under19
            if only_under_19 and not under:
                continue
            reports.append(FaceReport(frame.timestamp, face_box_fraction(face.box, features.frame_size),
                                      float(face.age_mean or 0.0), float(face.age_std or 0.0),
                                      float(face.age_p_under19), under))
    return reports
