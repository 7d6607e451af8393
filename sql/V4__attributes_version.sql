-- Every change of a user's attributes (and so of their broadcast audiences) counts
-- up: a node that reads them more than once at a time keeps the newest answer, not
-- the last one to arrive. A trigger counts, so that a change made outside the server
-- API (an operator's UPDATE) is ordered too.
ALTER TABLE users ADD COLUMN attributes_version BIGINT NOT NULL DEFAULT 0;

CREATE FUNCTION users_attributes_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.org, NEW.roles, NEW.jobs) IS DISTINCT FROM (OLD.org, OLD.roles, OLD.jobs) THEN
        NEW.attributes_version := OLD.attributes_version + 1;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER users_attributes_version BEFORE UPDATE OF org, roles, jobs ON users
    FOR EACH ROW EXECUTE FUNCTION users_attributes_version();
