"""Every default, set once (durations in seconds).

The public functions and both command-line tools take their defaults from
here; change a value here and it changes everywhere.
"""

from __future__ import annotations

import warnings
from datetime import timedelta
from typing import Any

# Connecting: a service's start-up waits for a database that is still starting.
CONNECT_ATTEMPTS = 30
CONNECT_WAIT = 2.0  # between two attempts
CONNECT_TIMEOUT = 10.0  # for one attempt
# The operator's CLI does not wait: a person who mistyped a port wants the error now
# (golang-migrate's CLI does not retry either). A deploy job that starts beside the
# database passes --attempts 30.
CLI_CONNECT_ATTEMPTS = 1
APPLICATION_NAME = "silentpulse-db"
# A killed runner frees the migration lock within about this long (PG 14+).
CLIENT_CONNECTION_CHECK_INTERVAL = "2s"

# What the library sets on its own sessions (migrations, the schema jobs,
# migrate-credentials) after connecting, whatever the role or database sets
# (ALTER ROLE ... SET, as managed PostgreSQL often does):
ENGINE_SESSION_SETTINGS = {
    # If the process dies mid-statement (SIGKILL, lost pod), the server notices the
    # closed socket within seconds, rolls back and frees the locks (PG 14+).
    "client_connection_check_interval": CLIENT_CONNECTION_CHECK_INTERVAL,
    # A migration, a concurrent index build or a wait for the migration lock takes as
    # long as it takes: a role's statement_timeout would cut it and leave an INVALID
    # index behind. Table-lock waits are bounded by TABLE_LOCK_TIMEOUT instead; a file
    # may SET its own.
    "statement_timeout": "0",
    # Table-lock waits are the engine's to bound (TABLE_LOCK_TIMEOUT, per transaction, and
    # retried); a concurrent index build must wait for older transactions, unbounded.
    "lock_timeout": "0",
    # The library is never idle inside its own transactions but between two statements;
    # a role's tight limit (seconds) could end a busy runner's session. A minute frees
    # the locks of a runner that is stopped or hung mid-transaction.
    "idle_in_transaction_session_timeout": "1min",
    # A version the runner reports must survive a crash: with the server's (the role's,
    # the database's) synchronous_commit = off, a COMMIT returns before its WAL is
    # flushed, and a crash a moment later brought a database back one version behind
    # what `up` had reported (issue 28). The library's writes are few; each waits for
    # its flush (and a synchronous standby's, where one is configured).
    "synchronous_commit": "on",
}

# A migration running longer than this logs its progress this often.
PROGRESS_EVERY = 5.0

# The migration lock.
MIGRATION_LOCK_TIMEOUT = 60.0  # how long to wait for another runner
# A statement on the version tables waits for another session's lock on them as long as
# the migration lock is waited for, and at least this long: a lock wait of 0 ("do not
# wait for another runner") still leaves each read its milliseconds.
VERSION_TABLES_MIN_WAIT = 1.0
# A waiter wakes when our holder's release NOTIFYs; polling the lock is the fallback
# for a golang-migrate holder or a dead one. Each poll is two queries: 19 waiters
# polling fast slowed the holder's migrations more than they gained.
LOCK_POLL_FIRST = 1.0  # first pause between two tries, growing to LOCK_POLL_MAX
LOCK_POLL_MAX = 2.0

# A migration statement waits at most this long for a table lock: while it waits,
# every later query on that table queues behind it. Then the migration is rolled
# back and retried with backoff, for DDL_RETRY_FOR seconds in all.
TABLE_LOCK_TIMEOUT = 3.0
DDL_RETRY_FOR = 60.0
DDL_RETRY_FIRST = 0.5  # first pause between two attempts, doubling (with jitter) ...
DDL_RETRY_MAX = 8.0  # ... up to this

# migrate-credentials: how long to wait for another run of it to finish.
ROTATION_LOCK_TIMEOUT = 30.0
# migrate-credentials connects up to this many times (CONNECT_WAIT apart): an operator's
# job, run with the services stopped, against a server that is up.
ROTATION_CONNECT_ATTEMPTS = 3

# Partitions: months created ahead of time, and how long a partition change
# may wait for its table's lock before it is skipped (and retried later).
PARTITIONS_AHEAD = 3
PARTITION_LOCK_TIMEOUT = 3.0
# The furthest month (after the current one) the partition job ever creates, for
# `ahead` and for rows sitting in a default partition alike: retention never drops a
# future month, so rows dated years ahead would otherwise add a partition each. Rows
# past it stay in the default partition (reported) until their month comes in reach.
PARTITIONS_MAX_AHEAD = 24

# The alert change log (retention): a change every named consumer has passed goes
# after ALERT_LOG_KEEP (listeners without a name reconnect within it); any change goes
# after ALERT_LOG_MAX_AGE (a consumer behind it gets AlertGapError).
ALERT_LOG_KEEP = timedelta(days=1)
ALERT_LOG_MAX_AGE = timedelta(days=30)

# Dry-run plans (up --dry-run) warn about an ACCESS EXCLUSIVE lock on a relation
# estimated (pg_class.reltuples) at this many rows or more: long enough to queue
# every query on it behind a slow statement.
LARGE_TABLE_ROWS = 100_000

# Scratch databases (check, baseline) are named <prefix>_<random>.
SCRATCH_PREFIX = "silentpulse_scratch"

# The DSN comes from --database or, in this order, these environment variables.
DSN_ENV_VARS = ("DATABASE_URL", "POSTGRES_DSN")
# --scratch-dsn's environment form (check, baseline, drift): a password on the command
# line is visible to ps.
SCRATCH_DSN_ENV = "SCRATCH_DATABASE_URL"
# Whose passwords an error message printed by a CLI never shows.
SECRET_ENV_VARS = (*DSN_ENV_VARS, SCRATCH_DSN_ENV)


# Renamed so that each name says which lock it waits for; the old names warn until 0.3.0.
_RENAMED = {"LOCK_TIMEOUT": "MIGRATION_LOCK_TIMEOUT", "DDL_LOCK_TIMEOUT": "TABLE_LOCK_TIMEOUT"}


def __getattr__(name: str) -> Any:
    new = _RENAMED.get(name)
    if new is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"silentpulse_db.defaults.{name} is deprecated and goes in 0.3.0: use {new}",
        DeprecationWarning,
        stacklevel=2,
    )
    return globals()[new]
