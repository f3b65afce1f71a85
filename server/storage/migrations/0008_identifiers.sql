-- jiwoom schema v8: a victim's personal information in crawled posts (issue 16). An officer records a case's
-- identifiers; only their keyed digests are stored (HMAC-SHA256 under the identifier key, a file outside the
-- database). A crawled post that shows one of them, or on a suspected post a generic pattern (anyone's mobile
-- number, resident registration number, email, messenger ID), is an exposure: its kind and where it was, never
-- its value. The sighting's title and text are stored with each found span replaced by its kind.

create table case_identifiers (
    id          bigserial primary key,
    case_id     text not null references cases (id) on delete cascade,
    kind        text not null check (kind in ('name', 'phone', 'handle', 'email', 'place')),
    digest      bytea not null,
    created_at  timestamptz not null default now(),
    created_by  text not null,
    unique (case_id, digest)
);

create table sighting_exposures (
    id           bigserial primary key,
    sighting_id  bigint not null references sightings (id) on delete cascade,
    case_id      text references cases (id) on delete cascade,  -- null: a generic pattern, anyone's
    kind         text not null check (kind in ('name', 'phone', 'handle', 'email', 'place', 'rrn', 'messenger')),
    field        text not null check (field in ('title', 'text', 'ocr')),
    found_at     timestamptz not null default now(),
    unique nulls not distinct (sighting_id, case_id, kind, field)
);
create index sighting_exposures_case on sighting_exposures (case_id);

-- An item may now be a post that exposes personal information (with its case, or none for a generic pattern):
-- one item per sighting, reference, reason and case.
alter table evidence_items drop constraint evidence_items_reason_check;
alter table evidence_items add constraint evidence_items_reason_check
    check (reason in ('match', 'under_19', 'personal_info'));
alter table evidence_items drop constraint evidence_items_sighting_id_reference_id_key;
alter table evidence_items add constraint evidence_items_one_per_reason
    unique nulls not distinct (sighting_id, reference_id, reason, case_id);
