-- The tables of blog.py, for SQLite and PostgreSQL alike, as they are now (version: the highest N
-- of upgrades/N-name.sql, or 1 when there is none).
-- A new database gets this whole file at once and is stamped with the newest version. A database
-- made by an older version gets the steps it lacks instead, each upgrades/N-name.sql in one
-- transaction with its version bump (blog.py's Appendix H; `python blog.py migrate`), while
-- other processes starting at once wait their turn. So a change to the tables is written twice:
-- here, and as the next numbered step.
-- The one difference in shared lines, how `id INTEGER PRIMARY KEY AUTOINCREMENT` counts up, is
-- handled in blog.py's schema_script (AUTOINCREMENT: SQLite never hands out a deleted row's id
-- again, so a deleted account's token can never name a new account, nor an event id repeat).
-- A line "-- on sqlite:" or "-- on postgresql:" starts lines for that database only, up to the
-- next "-- on both:". Steps use the same markers, and hold no BEGIN or COMMIT.
-- Timestamps are ISO-8601 UTC text ("2026-11-21T20:17:24.123Z"): it sorts in time order on both.

-- The schema's version, in one row. Version 1 had no such table: a database with tables but
-- without this one is at version 1.
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    username      TEXT NOT NULL,
    email         TEXT NOT NULL UNIQUE,          -- stored lower-case
    password_hash TEXT NOT NULL,                 -- bcrypt, never sent to a client
    role          TEXT NOT NULL CHECK (role IN ('user', 'approver', 'admin')),
    created_at    TEXT NOT NULL,
    display_name  TEXT,                          -- the profile: each optional, each public
    bio           TEXT,
    avatar_url    TEXT,
    email_verified INTEGER NOT NULL DEFAULT 0,   -- 1 once its owner opened the link mailed to it
    -- One up at every password or address change; every mailed link carries it, so such a change
    -- kills every earlier link, and changing back revives none.
    security_stamp INTEGER NOT NULL DEFAULT 0,
    -- The last "this wasn't me" link used: the stamp it was made with, and the one it left. Such a link
    -- works if older than the one used or newer than that undo: the earliest address wins, each once.
    undone_with    INTEGER NOT NULL DEFAULT 0,
    undone_at      INTEGER NOT NULL DEFAULT 0,
    -- The address the account last moved away from, still its own until then (its undo link works that long).
    moved_from     TEXT,
    moved_until    TEXT
);
-- "Alice" may not register beside "alice": one person, one name, whatever the case.
CREATE UNIQUE INDEX IF NOT EXISTS users_username ON users (LOWER(username));
CREATE INDEX IF NOT EXISTS users_role ON users (role);

-- One row per login. Its refresh token is rotated on every refresh: only the newest one works,
-- and presenting an older one (it was stolen, or its owner's copy was) ends the session.
CREATE TABLE IF NOT EXISTS sessions (
    id           TEXT PRIMARY KEY,               -- the "sid" claim of the session's tokens
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    refresh_hash TEXT NOT NULL,                  -- SHA-256 of the current refresh token, never the token
    expires_at   TEXT NOT NULL,
    ended_at     TEXT                            -- logout, a reused refresh token, a password change
);
CREATE INDEX IF NOT EXISTS sessions_user_id ON sessions (user_id);
CREATE INDEX IF NOT EXISTS sessions_expires_at ON sessions (expires_at);

-- Guesses counted per key ("account:42", "name:nobody", "address:203.0.113.7",
-- "register:203.0.113.7") within a window that starts with the first one. A table, not a dict
-- in memory, so that every app process counts the same guesses.
CREATE TABLE IF NOT EXISTS guesses (
    key         TEXT PRIMARY KEY,
    count       INTEGER NOT NULL,
    window_ends TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS guesses_window_ends ON guesses (window_ends);

-- The mail outbox: each mail is written here in the transaction of what caused it (a
-- registration, a reset asked for), and deleted once sent. Each process's sender claims a mail
-- with a conditional UPDATE that moves send_after past a lease: a sender that dies mid-send
-- leaves a claim that runs out, and the mail is tried again. A failed try moves send_after on by
-- a growing pause. Mailed links need no table: each signs its account's security_stamp.
CREATE TABLE IF NOT EXISTS mails (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient  TEXT NOT NULL,
    subject    TEXT NOT NULL,
    body       TEXT NOT NULL,                    -- plain text; a link in it ends with token=...
    attempts   INTEGER NOT NULL DEFAULT 0,
    send_after TEXT NOT NULL,                    -- not before: now, after a retry's pause, or past a claim's lease
    claimed_by TEXT,                             -- the process that last claimed it
    created_at TEXT NOT NULL,
    priority   INTEGER NOT NULL DEFAULT 0        -- 0: a link someone waits for; 1: a notice, sent after the links
);
CREATE INDEX IF NOT EXISTS mails_send_after ON mails (send_after);

CREATE TABLE IF NOT EXISTS blogs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    title         TEXT NOT NULL,
    content       TEXT NOT NULL,                 -- Markdown
    images        TEXT NOT NULL,                 -- a JSON list of http(s) URLs
    status        TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected')),
    reject_reason TEXT,
    author_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    search_words  TEXT NOT NULL DEFAULT '',      -- title and content, case-folded by blog.py, for ?q=
    version       INTEGER NOT NULL DEFAULT 1     -- one up at every write: the ETag that If-Match compares
);
-- Every list is "newest first within a status", or "newest first by one author" within a status.
CREATE INDEX IF NOT EXISTS blogs_status_id ON blogs (status, id);
CREATE INDEX IF NOT EXISTS blogs_author_status_id ON blogs (author_id, status, id);

-- on sqlite:
-- ?q= searches an FTS5 index of search_words, kept in step with the blogs table by triggers.
CREATE VIRTUAL TABLE IF NOT EXISTS blog_search USING fts5 (
    search_words, content = 'blogs', content_rowid = 'id', tokenize = 'unicode61 remove_diacritics 0'
);
CREATE TRIGGER IF NOT EXISTS blog_search_insert AFTER INSERT ON blogs BEGIN
    INSERT INTO blog_search (rowid, search_words) VALUES (new.id, new.search_words);
END;
CREATE TRIGGER IF NOT EXISTS blog_search_delete AFTER DELETE ON blogs BEGIN
    INSERT INTO blog_search (blog_search, rowid, search_words) VALUES ('delete', old.id, old.search_words);
END;
CREATE TRIGGER IF NOT EXISTS blog_search_update AFTER UPDATE OF search_words ON blogs BEGIN
    INSERT INTO blog_search (blog_search, rowid, search_words) VALUES ('delete', old.id, old.search_words);
    INSERT INTO blog_search (rowid, search_words) VALUES (new.id, new.search_words);
END;
-- on postgresql:
-- ?q= searches a full-text index of search_words ('simple': every word as it is, no stemming).
ALTER TABLE blogs ADD COLUMN IF NOT EXISTS search tsvector
    GENERATED ALWAYS AS (to_tsvector('simple', search_words)) STORED;
CREATE INDEX IF NOT EXISTS blogs_search ON blogs USING GIN (search);
-- on both:

CREATE TABLE IF NOT EXISTS comments (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    blog_id    INTEGER NOT NULL REFERENCES blogs (id) ON DELETE CASCADE,
    author_id  INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    text       TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS comments_blog_id ON comments (blog_id, id);
CREATE INDEX IF NOT EXISTS comments_author_id ON comments (author_id, created_at);  -- the chat flood limit

CREATE TABLE IF NOT EXISTS follows (
    follower_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    followed_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (follower_id, followed_id),      -- following twice is following once
    CHECK (follower_id <> followed_id)
);
CREATE INDEX IF NOT EXISTS follows_followed_id ON follows (followed_id, follower_id);

CREATE TABLE IF NOT EXISTS likes (
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    blog_id    INTEGER NOT NULL REFERENCES blogs (id) ON DELETE CASCADE,
    created_at TEXT NOT NULL,
    PRIMARY KEY (blog_id, user_id)               -- liking twice is liking once; counted per blog
);
CREATE INDEX IF NOT EXISTS likes_user_id ON likes (user_id);

CREATE TABLE IF NOT EXISTS feature_requests (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    title       TEXT NOT NULL,
    description TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'accepted', 'declined')),
    priority    INTEGER NOT NULL CHECK (priority BETWEEN 1 AND 5),
    author_id   INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS feature_requests_status_id ON feature_requests (status, id);

CREATE TABLE IF NOT EXISTS drafts (
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title      TEXT NOT NULL,
    content    TEXT NOT NULL,
    images     TEXT NOT NULL,                    -- a JSON list of http(s) URLs
    updated_at TEXT NOT NULL,
    version    INTEGER NOT NULL DEFAULT 1,       -- one up at every save: the ETag that If-Match compares
    PRIMARY KEY (user_id)                        -- one draft per user
);

-- Background work: a writing job drafts a post with a language model, outside the request.
-- Each process claims pending jobs one at a time with a conditional UPDATE, so each runs once,
-- and keeps its running jobs' heartbeat fresh; a job whose heartbeat stops (its process died)
-- is marked failed by whichever process notices.
CREATE TABLE IF NOT EXISTS jobs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind         TEXT NOT NULL,                  -- draft_generation
    status       TEXT NOT NULL CHECK (status IN ('pending', 'in_progress', 'completed', 'failed')),
    input        TEXT NOT NULL,                  -- a JSON object: {"title": ..., "notes": ...}
    result       TEXT,                           -- the Markdown written, once completed
    filled_draft INTEGER NOT NULL DEFAULT 0,     -- 1 if the result went into the user's draft
    error        TEXT,                           -- why it failed, in words a person can act on
    claimed_by   TEXT,                           -- the process running it
    heartbeat_at TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_user_id ON jobs (user_id, id);
CREATE INDEX IF NOT EXISTS jobs_status_id ON jobs (status, id);
-- At most one unfinished job per user: a second is refused by the database itself.
CREATE UNIQUE INDEX IF NOT EXISTS jobs_one_unfinished_per_user ON jobs (user_id)
    WHERE status IN ('pending', 'in_progress');

-- The event log: every change that clients hear of live, written in the same transaction as
-- the change. Each app process reads the rows after the last one it has seen and hands them to
-- its own event streams and chat rooms; an event stream's ids are these ids. Rows older than
-- the retention period (blog.py's EVENT_RETENTION_HOURS) are deleted, all but the newest.
CREATE TABLE IF NOT EXISTS events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT NOT NULL,                    -- blog_pending, chat_message, public_changed, ...
    data       TEXT NOT NULL,                    -- a JSON object
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_created_at ON events (created_at);

-- The record of decisions: who submitted, edited, reviewed or deleted what, who changed whose
-- role or deleted whose account, and with what detail. blog.py only ever INSERTs here, in the
-- transaction of the change it records. No foreign keys, on purpose: a record outlives the blog
-- and the accounts it names. ON DELETE CASCADE would erase it, and ON DELETE SET NULL would be an
-- UPDATE of a row nobody may change; so `actor` and `target` keep the usernames as they were, and
-- `blog_id` the blog's id (AUTOINCREMENT: an id is never handed out again).
CREATE TABLE IF NOT EXISTS records (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    action     TEXT NOT NULL,                    -- blog_submitted, blog_rejected, role_changed, ...
    actor      TEXT NOT NULL,                    -- the username of whoever decided
    blog_id    INTEGER,                          -- the blog it is about, if any
    target     TEXT,                             -- the username it is about, if any
    detail     TEXT NOT NULL,                    -- a JSON object: {"reason": "..."}, {"from": "user", "to": "admin"}
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_blog_id ON records (blog_id, id);        -- a blog's history
CREATE INDEX IF NOT EXISTS records_actor ON records (LOWER(actor), id);     -- the audit's ?actor=
CREATE INDEX IF NOT EXISTS records_action ON records (action, id);          -- the audit's ?action=
