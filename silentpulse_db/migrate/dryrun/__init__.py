"""The dry run (``up --dry-run``): ``preview.py`` plans without changing anything; the
lock each statement takes is read from its SQL by ``files/lock_levels.py``."""
