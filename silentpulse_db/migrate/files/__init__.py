"""The migration files: found, validated, split into statements, and scaffolded.

``source.py`` finds the numbered pairs in a folder or a package; ``directives.py``
reads a file's ``-- silentpulse:`` header; ``statements.py`` splits a file into
statements with PostgreSQL's own parser (pglast) and says whether it can run in a
transaction; ``lock_levels.py`` says, purely from a parsed statement, which table lock
it takes and whether it rewrites or scans the table (read by both the dry run and the
runner's lock retries); ``scaffold.py`` creates the next pair under the naming rules.
"""
