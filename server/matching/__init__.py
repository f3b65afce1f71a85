"""From index hits to matches: per-case thresholds, the negative bank, and video segments. Pure code, but for
`library` (the indexes it holds).

Hits arrive per signal as (query row, stored owner, stored row, score). A match is one (owner, signal,
segment): for video, frames whose hits keep a steady offset between query time and target time (temporal
voting) are merged into one segment, with start and end in both videos. Images are one-frame videos at t = 0.

Modules: `decisions` (thresholds, the calibrated decision, the one decision path), `segments`
(temporal voting), `youth` (age triage of faces), `negative_bank`, `library` (the searchable collections),
`verify` (geometric verification) and `identifiers` (a victim's identifiers found in text by their keyed digests).
The null tails that give a score its expected false matches are `server.calibration`, below the signals, which own
theirs.
"""
