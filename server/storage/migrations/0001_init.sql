-- jiwoom schema v1. Victims' reference media are never stored: only hashes and embeddings (bytea, row-major
-- numpy arrays) and the SHA-256 of the bytes received (to make retries idempotent). Deleting a reference or a
-- case cascades to everything derived from it; the audit log keeps only ids.

create table cases (
    id          text primary key,
    thresholds  jsonb not null default '{}'::jsonb,  -- per-signal overrides: {"pdq": 31, "embedding": 0.6, ...}
    created_at  timestamptz not null default now(),
    created_by  text not null
);

create table reference_media (
    id              bigserial primary key,
    case_id         text not null references cases (id) on delete cascade,
    kind            text not null check (kind in ('image', 'video', 'hashes')),
    content_sha256  bytea not null,
    width           integer not null default 0,
    height          integer not null default 0,
    duration_s      real not null default 0,
    frame_count     integer not null default 0,
    created_at      timestamptz not null default now(),
    created_by      text not null,
    unique (case_id, content_sha256)
);

create table sightings (
    id              bigserial primary key,
    url             text not null,
    page_url        text not null default '',
    site            text not null default '',
    title           text not null default '',
    author          text not null default '',
    posted_at       timestamptz,
    post_text       text not null default '',
    suspected       boolean not null default false,
    extra           jsonb not null default '{}'::jsonb,
    kind            text not null check (kind in ('image', 'video', 'frames')),
    content_sha256  bytea,
    width           integer not null default 0,
    height          integer not null default 0,
    duration_s      real not null default 0,
    frame_count     integer not null default 0,
    youth_faces     integer not null default 0,  -- faces flagged under 19 (triage, not a verdict)
    seen_at         timestamptz not null default now(),
    seen_by         text not null
);
create index sightings_url on sightings (url);
create index sightings_sha256 on sightings (content_sha256);

create table benign_media (
    id           bigserial primary key,
    sighting_id  bigint references sightings (id) on delete set null,
    note         text not null default '',
    created_at   timestamptz not null default now(),
    created_by   text not null
);

-- One row per (owner, signal): all of an item's vectors in one blob, so rebuilding an index reads a few large
-- rows instead of millions of small ones.
create table reference_vectors (
    reference_id  bigint not null references reference_media (id) on delete cascade,
    signal      text not null,
    dim         integer not null,
    dtype       text not null,   -- numpy dtype: float32 or uint8
    vectors     bytea not null,  -- [n, dim]
    timestamps  bytea not null,  -- float32 [n]: time of the frame each row came from
    boxes       bytea not null,  -- float32 [n, 4]
    frames      bytea not null,  -- int32 [n]
    primary key (reference_id, signal)
);

create table sighting_vectors (
    sighting_id  bigint not null references sightings (id) on delete cascade,
    signal      text not null,
    dim         integer not null,
    dtype       text not null,   -- numpy dtype: float32 or uint8
    vectors     bytea not null,  -- [n, dim]
    timestamps  bytea not null,  -- float32 [n]: time of the frame each row came from
    boxes       bytea not null,  -- float32 [n, 4]
    frames      bytea not null,  -- int32 [n]
    primary key (sighting_id, signal)
);

create table benign_vectors (
    benign_id  bigint not null references benign_media (id) on delete cascade,
    signal      text not null,
    dim         integer not null,
    dtype       text not null,   -- numpy dtype: float32 or uint8
    vectors     bytea not null,  -- [n, dim]
    timestamps  bytea not null,  -- float32 [n]: time of the frame each row came from
    boxes       bytea not null,  -- float32 [n, 4]
    frames      bytea not null,  -- int32 [n]
    primary key (benign_id, signal)
);

-- A reference matched a sighting (crawled media) or another case's reference.
create table matches (
    id                  bigserial primary key,
    reference_id        bigint not null references reference_media (id) on delete cascade,
    sighting_id         bigint references sightings (id) on delete cascade,
    other_reference_id  bigint references reference_media (id) on delete cascade,
    signal              text not null,
    score               real not null,
    threshold           real not null,
    reference_start_s   real not null default 0,
    reference_end_s     real not null default 0,
    other_start_s       real not null default 0,   -- in the sighting or the other reference
    other_end_s         real not null default 0,
    matched_frames      integer not null default 1,
    under_19            boolean not null default false,
    faces               jsonb not null default '[]'::jsonb,
    found_by            text not null check (found_by in ('match', 'retro_hunt')),
    created_at          timestamptz not null default now(),
    check ((sighting_id is null) <> (other_reference_id is null))
);
create index matches_reference on matches (reference_id);
create index matches_sighting on matches (sighting_id);
create index matches_other_reference on matches (other_reference_id);

-- Bearer tokens are stored as SHA-256 only; the token itself is shown once when created.
create table api_tokens (
    id            bigserial primary key,
    name          text not null,
    role          text not null check (role in ('crawler', 'case_system', 'officer', 'admin')),
    token_sha256  bytea not null unique,
    created_at    timestamptz not null default now(),
    revoked_at    timestamptz
);

create table audit_log (
    id      bigserial primary key,
    at      timestamptz not null default now(),
    actor   text not null,   -- token name
    role    text not null,
    action  text not null,   -- the RPC
    target  text not null default '',  -- ids only, never content
    detail  jsonb not null default '{}'::jsonb
);
create index audit_log_at on audit_log (at);
