-- Version 5: an author's approved posts, newest first, read from one index and nothing else.
-- Run once, in one transaction with the version bump, by blog.py's upgrade runner (see the README).

-- on both:
-- The feed (each followed author's newest posts) and ?author= read an author's approved posts
-- below the cursor. Through (author_id, id) they also read, to skip it, every post of that author
-- waiting for review or rejected on the way, each a row of a few KB; (author_id, status, id)
-- keeps those apart.
DROP INDEX blogs_author_id;
CREATE INDEX blogs_author_status_id ON blogs (author_id, status, id);
