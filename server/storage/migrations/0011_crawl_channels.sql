-- jiwoom schema v11: SNS channels in the crawl (ingest/platforms/). A page of a channel's posts (Telegram's public
-- preview, an X API page) is a frontier row of its own kind, claimed, retried and resumed like the others; its
-- `selectors` names the channel (ChannelSpec.key) and its `depth` is the page's number, newest first.
-- The kind check is widened from what it is now, not rewritten, so kinds another migration added stay allowed.
do $$
declare
    kinds text[];
begin
    select array_agg(m[1]) into kinds
    from pg_constraint c, regexp_matches(pg_get_constraintdef(c.oid), '''([a-z_]+)''', 'g') as m
    where c.conrelid = 'crawl_frontier'::regclass and c.conname = 'crawl_frontier_kind_check';
    if kinds is null then
        raise exception 'crawl_frontier_kind_check not found';
    end if;
    alter table crawl_frontier drop constraint crawl_frontier_kind_check;
    execute format('alter table crawl_frontier add constraint crawl_frontier_kind_check check (kind = any (%L::text[]))',
                   array(select distinct k from unnest(kinds || array['channel']) as k order by k));
end
$$;
