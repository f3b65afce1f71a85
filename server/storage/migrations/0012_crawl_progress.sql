-- A running crawl's figures (pages, media, posts, matches, errors, skipped, rates), written by the crawler every
-- few seconds so that the officers' console can show them.
alter table crawl_jobs add column progress jsonb not null default '{}'::jsonb;
