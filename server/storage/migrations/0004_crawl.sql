-- jiwoom schema v4: the crawler (ingest/). A crawl job's frontier lives here, so a crash mid-crawl resumes where it
-- stopped without fetching finished pages again; posts and media seen feed the per-author and per-media statistics.

create table crawl_jobs (
    id          text primary key,
    prompt      text not null default '',
    config      jsonb not null,          -- the job's config file as loaded (no secrets)
    keywords    jsonb not null default '[]'::jsonb,  -- the expansion, ranked
    minors      boolean not null default false,      -- the prompt concerns minors
    hosts       text[] not null default '{}',        -- hosts in scope: the seeds' and those searches found
    state       text not null default 'running' check (state in ('running', 'finished', 'stopped')),
    created_at  timestamptz not null default now(),
    created_by  text not null,
    updated_at  timestamptz not null default now()
);

-- One row per URL to fetch: a page (list, post, search result) or a post's media. 'fetching' rows that a crash
-- left behind go back to 'pending' when the job resumes; 'done' and 'failed' rows are never fetched again.
create table crawl_frontier (
    id              bigserial primary key,
    job_id          text not null references crawl_jobs (id) on delete cascade,
    url             text not null,
    kind            text not null check (kind in ('seed', 'search', 'page', 'media')),
    host            text not null,       -- host:port, for per-host limits
    depth           integer not null default 0,
    state           text not null default 'pending'
                    check (state in ('pending', 'fetching', 'done', 'failed', 'skipped')),
    attempts        integer not null default 0,
    error           text not null default '',
    discovered_from text not null default '',
    post            jsonb,               -- media rows: the post it was on (page url, title, author, time, text score)
    selectors       text not null default '',  -- the seed whose selectors apply (its URL), '' for generic
    added_at        timestamptz not null default now(),
    fetched_at      timestamptz,
    unique (job_id, kind, url, discovered_from)
);
create index crawl_frontier_next on crawl_frontier (job_id, state, kind, depth, id);

create table crawl_posts (
    job_id      text not null references crawl_jobs (id) on delete cascade,
    post_url    text not null,
    host        text not null,
    title       text not null default '',
    author      text not null default '',
    posted_at   timestamptz,
    text        text not null default '',
    text_score  real not null default 0,
    hits        jsonb not null default '[]'::jsonb,  -- keywords found in the normalised text
    suspected   boolean not null default false,
    media       integer not null default 0,
    seen_at     timestamptz not null default now(),
    primary key (job_id, post_url)
);
create index crawl_posts_author on crawl_posts (host, author);

create table crawl_media (
    job_id          text not null references crawl_jobs (id) on delete cascade,
    media_url       text not null,
    post_url        text not null,
    host            text not null,
    content_sha256  bytea,
    bytes           bigint not null default 0,
    sighting_id     bigint references sightings (id) on delete set null,
    matches         integer not null default 0,
    error           text not null default '',
    seen_at         timestamptz not null default now(),
    primary key (job_id, media_url, post_url)
);
create index crawl_media_sha256 on crawl_media (content_sha256);
