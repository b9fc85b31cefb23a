-- The tables of blog.py, for SQLite and PostgreSQL alike.
-- blog.py runs every statement at start-up, so each one is IF NOT EXISTS. The one dialect
-- difference, how `id INTEGER PRIMARY KEY` counts up, is handled in blog.py's create_tables.
-- Timestamps are ISO-8601 UTC text ("2026-11-21T20:17:24.123Z"): it sorts in time order on both.

CREATE TABLE IF NOT EXISTS users (
    id            INTEGER PRIMARY KEY,
    username      TEXT NOT NULL,
    email         TEXT NOT NULL UNIQUE,          -- stored lower-case
    password_hash TEXT NOT NULL,                 -- bcrypt, never sent to a client
    role          TEXT NOT NULL CHECK (role IN ('user', 'approver', 'admin')),
    created_at    TEXT NOT NULL
);
-- "Alice" may not register beside "alice": one person, one name, whatever the case.
CREATE UNIQUE INDEX IF NOT EXISTS users_username ON users (LOWER(username));

CREATE TABLE IF NOT EXISTS refresh_tokens (
    token_hash TEXT PRIMARY KEY,                 -- SHA-256 of the token: a leaked table holds no usable token
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family     TEXT NOT NULL,                    -- shared by every token rotated from one login
    expires_at TEXT NOT NULL,
    used_at    TEXT                              -- set when rotated or logged out; a second use revokes the family
);
CREATE INDEX IF NOT EXISTS refresh_tokens_family ON refresh_tokens (family);
CREATE INDEX IF NOT EXISTS refresh_tokens_expires_at ON refresh_tokens (expires_at);

CREATE TABLE IF NOT EXISTS blogs (
    id            INTEGER PRIMARY KEY,
    title         TEXT NOT NULL,
    content       TEXT NOT NULL,                 -- Markdown
    images        TEXT NOT NULL,                 -- a JSON list of http(s) URLs
    status        TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected')),
    reject_reason TEXT,
    author_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
-- Every list is "newest first within a status" or "newest first by one author".
CREATE INDEX IF NOT EXISTS blogs_status_id ON blogs (status, id);
CREATE INDEX IF NOT EXISTS blogs_author_id ON blogs (author_id, id);

CREATE TABLE IF NOT EXISTS comments (
    id         INTEGER PRIMARY KEY,
    blog_id    INTEGER NOT NULL REFERENCES blogs (id) ON DELETE CASCADE,
    author_id  INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    text       TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS comments_blog_id ON comments (blog_id, id);

CREATE TABLE IF NOT EXISTS feature_requests (
    id          INTEGER PRIMARY KEY,
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
    PRIMARY KEY (user_id)                        -- one draft per user
);
