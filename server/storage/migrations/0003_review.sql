-- jiwoom schema v3: the officers' review (clients/console) and per-case negative banks.

-- Every evidence item waits for an officer's decision: confirm (its notice may go out), reject as not the victim
-- (its media joins the case's negative bank and leaves any unsent notice), or escalate to a senior officer.
alter table evidence_items
    add column review_state text not null default 'new'
        check (review_state in ('new', 'confirmed', 'rejected', 'escalated')),
    add column reviewed_by  text,
    add column reviewed_at  timestamptz,
    add column review_note  text not null default '';
create index evidence_items_review on evidence_items (review_state, priority desc, id);

-- Negative-bank media apply to every case (case_id null: media judged benign) or to one case only (an officer
-- judged a match not to be this victim: the same media may still be another victim's).
alter table benign_media
    add column case_id text references cases (id) on delete cascade;
create index benign_media_case on benign_media (case_id);
