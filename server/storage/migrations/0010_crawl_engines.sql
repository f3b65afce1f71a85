-- jiwoom schema v10: search engines' APIs in the crawl (ingest/engines/). A query to an engine is a frontier row of
-- its own kind, claimed, retried and resumed like the others; its `post` holds the query (engine, kind, keyword,
-- page) and the credentials never touch the table (the row's URL is the request without them).
alter table crawl_frontier drop constraint crawl_frontier_kind_check;
alter table crawl_frontier add constraint crawl_frontier_kind_check
    check (kind in ('seed', 'search', 'engine', 'page', 'media'));
