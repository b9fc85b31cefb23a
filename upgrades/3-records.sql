-- Version 3: the record of decisions, and a version number on every blog and draft.
-- Run once, in one transaction with the version bump, by blog.py's upgrade runner (see the README).

-- on both:
-- The record of decisions: who submitted, edited, reviewed or deleted what, who changed whose
-- role or deleted whose account, and with what detail. blog.py only ever INSERTs here, in the
-- transaction of the change it records. No foreign keys, on purpose: a record outlives the blog
-- and the accounts it names. ON DELETE CASCADE would erase it, and ON DELETE SET NULL would be an
-- UPDATE of a row nobody may change; so `actor` and `target` keep the usernames as they were, and
-- `blog_id` the blog's id (ids are never handed out again: see AUTOINCREMENT in schema.sql).
CREATE TABLE records (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    action     TEXT NOT NULL,                    -- blog_submitted, blog_rejected, role_changed, ...
    actor      TEXT NOT NULL,                    -- the username of whoever decided
    blog_id    INTEGER,                          -- the blog it is about, if any
    target     TEXT,                             -- the username it is about, if any
    detail     TEXT NOT NULL,                    -- a JSON object: {"reason": "..."}, {"from": "user", "to": "admin"}
    created_at TEXT NOT NULL
);
CREATE INDEX records_blog_id ON records (blog_id, id);        -- a blog's history
CREATE INDEX records_actor ON records (LOWER(actor), id);     -- the audit's ?actor=
CREATE INDEX records_action ON records (action, id);          -- the audit's ?action=

-- A version number per blog and per draft, one up at every write: the ETag that If-Match
-- compares, so that a save made from an old copy is refused rather than overwrite a newer one.
ALTER TABLE blogs ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE drafts ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
