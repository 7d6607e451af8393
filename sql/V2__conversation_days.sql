-- Where each conversation's seqs fall in time: one row per conversation and UTC day on
-- which it stored messages, holding the first seq stored that day. Written with every
-- group commit, under the conversation's row lock. Reads by seq (a history page, a
-- sync from a cursor) take from it a lower bound on created_at, so Postgres prunes
-- every partition older than the messages they want, however many partitions there
-- are. (Rows of days whose messages have all expired are harmless and stay.)
CREATE TABLE conversation_days (
    conv      bigint      NOT NULL,
    day       timestamptz NOT NULL,
    first_seq bigint      NOT NULL,
    PRIMARY KEY (conv, day)
);

INSERT INTO conversation_days (conv, day, first_seq)
SELECT conv, date_trunc('day', created_at, 'UTC'), min(seq)
  FROM messages
 GROUP BY 1, 2;
