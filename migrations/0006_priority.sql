-- The claim takes the most critical due repositories first: it walks the priorities that have
-- due rows (one descent each) and takes each one's oldest due, both on this index. One
-- statement ordered by (priority DESC, next_due_at) would instead read every not-yet-due row
-- of a priority in index order, or sort every due row (after an import, the whole table).
-- repos_due_idx stays for the backlog count and the oldest due time.
CREATE INDEX repos_priority_due_idx ON repos (priority DESC, next_due_at) WHERE enabled;
