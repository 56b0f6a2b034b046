"""The dry run (``up --dry-run``): ``preview.py`` plans without changing anything;
``lock_levels.py`` says, purely from the parsed statement, which table lock each
statement takes and whether it rewrites or scans the table."""
