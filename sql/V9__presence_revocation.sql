-- Presence and token revocation.
--
-- Who is online lives in Redis (per-node leases, see the bus crate's presence module)
-- or in the node's memory on a single node; what outlives a socket is kept here:
-- when a user was last seen online (written when their going offline is announced),
-- and the instant before which their tokens stop working (a revocation by the
-- company's backend: every token issued at or before it is refused, open sockets too).
ALTER TABLE users ADD COLUMN last_seen TIMESTAMPTZ;
ALTER TABLE users ADD COLUMN tokens_not_before TIMESTAMPTZ;
