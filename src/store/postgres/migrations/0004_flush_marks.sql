-- boa-exchange PostgreSQL schema, version 4: a row per server session that the store's
-- flush updates. The store commits the writes sled leaves unflushed without waiting for the
-- disk (synchronous_commit off); its flush is one synchronous commit that must write WAL
-- (a transaction that writes none commits without a flush), so it bumps its session's row
-- here: one row per backend, so concurrent flushes never wait for each other.

CREATE TABLE flush_marks (
    pid int PRIMARY KEY,
    n   bigint NOT NULL
);
