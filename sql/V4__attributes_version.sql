-- Every change of a user's attributes (and so of their broadcast audiences) counts
-- up: a node that reads them more than once at a time keeps the newest answer, not
-- the last one to arrive.
ALTER TABLE users ADD COLUMN attributes_version BIGINT NOT NULL DEFAULT 0;
