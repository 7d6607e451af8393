-- Recent joins, for each node's periodic check that it listens to every conversation
-- of its online users (a join announced on the bus can be lost): that check asks for
-- the memberships of the last minute, which this index finds without reading the rest.
CREATE INDEX members_by_joined ON members (joined_at);
