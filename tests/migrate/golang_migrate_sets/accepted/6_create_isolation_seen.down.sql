DROP TABLE isolation_seen;
