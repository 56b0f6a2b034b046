-- Named apart from its up file: golang-migrate pairs by version.
BEGIN;
DROP TABLE accounts;
COMMIT;
