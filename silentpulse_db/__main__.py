"""``python -m silentpulse_db``: the operator CLI."""

from .migrate.cli import main

raise SystemExit(main())
