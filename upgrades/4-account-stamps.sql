-- Version 4: a security stamp per account, and links mailed before notices.
-- Run once, in one transaction with the version bump, by blog.py's upgrade runner (see the README).

-- on both:
-- Every mailed link (reset, verify, a new address, "this wasn't me") carries the account's stamp
-- as it was when the link was made; a password or address change moves it one up, so every
-- earlier link dies at once, and changing back revives none (ASP.NET Identity's SecurityStamp).
ALTER TABLE users ADD COLUMN security_stamp INTEGER NOT NULL DEFAULT 0;
-- The last "this wasn't me" (undo) link used: the stamp it was made with, and the stamp it left.
-- An undo link works while it is older than the one used, or newer than that undo: the earliest
-- address wins (a thief's own, later, undo links die), and each link works once.
ALTER TABLE users ADD COLUMN undone_with INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN undone_at INTEGER NOT NULL DEFAULT 0;
-- The address the account last moved away from, still its own until then (its undo link works that long).
ALTER TABLE users ADD COLUMN moved_from TEXT;
ALTER TABLE users ADD COLUMN moved_until TEXT;

-- 0: a link someone waits for (reset, verify); 1: a notice. The sender takes links first.
ALTER TABLE mails ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
