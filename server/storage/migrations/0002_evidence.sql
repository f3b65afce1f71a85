-- jiwoom schema v2: evidence, takedown notices and removal monitoring (clients/evidence, clients/notices,
-- clients/monitor).

-- An item is one piece of crawled media on one page that needs action: a match to a case's reference, or a face
-- flagged under 19 in a suspected post (then there is no case). Its artefacts are encrypted with the item's own
-- data key, stored here wrapped by the evidence master key (a file outside the database). Deleting the item
-- deletes the key, so forgetting a case crypto-shreds its evidence even where ciphertext survives elsewhere
-- (a backup, a heap page not yet reused).
create table evidence_items (
    id                bigserial primary key,
    case_id           text references cases (id) on delete cascade,
    reference_id      bigint references reference_media (id) on delete cascade,
    sighting_id       bigint not null references sightings (id) on delete cascade,
    reason            text not null check (reason in ('match', 'under_19')),
    under_19          boolean not null default false,
    site              text not null,   -- host of the page: notices and removal reports group by it
    priority          integer not null,  -- higher first: items flagged under 19 go before the rest
    wrapped_key       bytea not null,
    capture_state     text not null default 'pending' check (capture_state in ('pending', 'captured', 'failed')),
    capture_attempts  integer not null default 0,
    capture_error     text not null default '',
    captured_at       timestamptz,
    log_seq           bigint,          -- the evidence-log entry of the capture
    removal_state     text not null default 'open'
                      check (removal_state in ('open', 'notified', 'still_up', 'removed', 'reuploaded')),
    notified_at       timestamptz,
    removed_at        timestamptz,
    reopened_by       bigint references sightings (id) on delete set null,  -- the re-upload that reopened it
    next_check_at     timestamptz,
    last_checked_at   timestamptz,
    last_check        jsonb not null default '{}'::jsonb,
    checks            integer not null default 0,
    created_at        timestamptz not null default now(),
    check ((reason = 'match') = (reference_id is not null)),
    unique nulls not distinct (sighting_id, reference_id)
);
create index evidence_items_capture on evidence_items (capture_state, priority desc, id);
create index evidence_items_check on evidence_items (next_check_at) where removal_state <> 'open';
create index evidence_items_reference on evidence_items (reference_id);

create table evidence_artefacts (
    id          bigserial primary key,
    item_id     bigint not null references evidence_items (id) on delete cascade,
    kind        text not null check (kind in ('screenshot', 'warc', 'media', 'metadata')),
    media_type  text not null,
    sha256      bytea not null,   -- of the plaintext, as the log and the reports give it
    size        bigint not null,
    nonce       bytea not null,
    ciphertext  bytea not null,   -- AES-256-GCM with the item's key; associated data: item id and kind
    created_at  timestamptz not null default now(),
    unique (item_id, kind)
);

-- The tamper-evident log. Each entry's hash covers the previous entry's hash, so changing, inserting or deleting
-- an entry breaks every later link. Entries hold hashes only; what they describe (URLs, titles: personal data)
-- lives in evidence_log_payloads, which forgetting a case deletes while the chain stays verifiable (a 'forget'
-- entry names the items whose payloads went).
create table evidence_log (
    seq             bigint primary key,
    at              timestamptz not null,
    event           text not null,
    item_id         bigint,           -- no foreign key: the log outlives forgotten items
    payload_sha256  bytea not null,
    prev_hash       bytea not null,
    entry_hash      bytea not null unique
);

create table evidence_log_payloads (
    seq      bigint primary key references evidence_log (seq),
    item_id  bigint references evidence_items (id) on delete cascade,
    payload  text not null   -- canonical JSON: exactly the bytes payload_sha256 covers
);

create function evidence_log_append_only() returns trigger language plpgsql as $$
begin
    raise exception 'the evidence log is append-only (% on %)', tg_op, tg_table_name;
end $$;
create trigger evidence_log_append_only before update or delete on evidence_log
    for each row execute function evidence_log_append_only();
create trigger evidence_log_no_truncate before truncate on evidence_log
    for each statement execute function evidence_log_append_only();
-- Payloads may be deleted (a forgotten case) but never changed.
create trigger evidence_log_payloads_immutable before update on evidence_log_payloads
    for each row execute function evidence_log_append_only();

-- A takedown notice: one per site, case (none for under-19 items) and kind. Drafted in every language we have;
-- `language` is the one it goes out in. Nothing is sent before an officer approves it.
create table notices (
    id                bigserial primary key,
    reference         text not null unique,   -- our notice number, quoted in the mail and in replies
    case_id           text references cases (id) on delete cascade,
    kind              text not null check (kind in ('ncii', 'youth')),
    site              text not null,
    jurisdiction      text not null default '',
    language          text not null,
    recipient         text,
    recipient_source  text not null default 'none',
    priority          integer not null,
    state             text not null default 'draft'
                      check (state in ('draft', 'approved', 'sending', 'sent', 'failed', 'cancelled')),
    message_id        text,
    attempts          integer not null default 0,
    error             text not null default '',
    created_at        timestamptz not null default now(),
    approved_by       text,
    approved_at       timestamptz,
    sent_at           timestamptz
);
create index notices_state on notices (state, priority desc, id);

create table notice_texts (
    notice_id  bigint not null references notices (id) on delete cascade,
    language   text not null,
    subject    text not null,
    body       text not null,
    edited_by  text,   -- null while it is the generated draft
    edited_at  timestamptz,
    primary key (notice_id, language)
);

create table notice_items (
    notice_id  bigint not null references notices (id) on delete cascade,
    item_id    bigint not null references evidence_items (id) on delete cascade,
    primary key (notice_id, item_id)
);
create index notice_items_item on notice_items (item_id);
