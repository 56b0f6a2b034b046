BEGIN;
CREATE TABLE notes (id int PRIMARY KEY, body text);
SAVEPOINT before_scratch;
CREATE TABLE scratch (id int);
ROLLBACK TO SAVEPOINT before_scratch;
RELEASE SAVEPOINT before_scratch;
COMMIT;
