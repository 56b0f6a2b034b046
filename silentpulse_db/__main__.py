"""python -m silentpulse_db: the operator CLI."""

from .cli import main

raise SystemExit(main())
