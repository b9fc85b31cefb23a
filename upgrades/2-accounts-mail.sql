-- Version 2: verified addresses and the mail outbox (password reset and address verification).
-- Reset and verification tokens need no table: a reset token signs a fingerprint of the password
-- hash (it dies when the password changes), a verification token signs the address.
-- on both:

-- Accounts made before this step had no way to verify: they count as verified, so the upgrade
-- locks nobody out. Accounts registered from now on start unverified (the column's default).
ALTER TABLE users ADD COLUMN email_verified INTEGER NOT NULL DEFAULT 0;
UPDATE users SET email_verified = 1;

CREATE TABLE mails (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient  TEXT NOT NULL,
    subject    TEXT NOT NULL,
    body       TEXT NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    send_after TEXT NOT NULL,
    claimed_by TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX mails_send_after ON mails (send_after);
