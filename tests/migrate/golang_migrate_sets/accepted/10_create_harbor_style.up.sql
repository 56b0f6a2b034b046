-- Up files only, as Harbor ships them: no 10_*.down.sql.
CREATE TABLE harbor_style (id int PRIMARY KEY);
