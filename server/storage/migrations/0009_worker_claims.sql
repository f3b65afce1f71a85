-- jiwoom schema v9: work claims (issue 20, stateless replicas). Several workers share one database: a worker
-- takes an item for capture, or for a removal check, by writing its claimant id and a lease end in the same
-- transaction that picks the item with `for update skip locked` (clients/evidence/store.py). Others skip a claimed
-- item until its lease ends, so the items of a worker that died are picked again then. The capture itself runs
-- under the item's row lock and re-checks the claim, so a lease that ran out can never make two captures.
-- Notices need no column: sending is claimed by their 'sending' state.
alter table evidence_items
    add column capture_claimed_by     text,
    add column capture_claimed_until  timestamptz,
    add column check_claimed_by       text,
    add column check_claimed_until    timestamptz;
