"""Following alerts: the alert change log read in order, NOTIFY as a wake-up only.

Migration 000022 writes one row of ``alert_changes`` for each alert created and each
status change, in the writing transaction, at a position only the server assigns
(its transaction id, then an identity). :func:`listen_alerts` reads that log in
order below the horizon no open transaction can still commit under, so a late
commit is never skipped; the ``pg_notify`` on :data:`ALERT_CHANNEL` only wakes it,
and no payload decides anything (any role may send one). A named consumer keeps
its position in ``alert_listener_positions``, delivers from one process at a time
(the others stand by), and resumes after the last change it delivered.

On Citus, once the log is distributed beside ``alerts``, each node's changes are read
in that node's order below that node's horizon, and the log is polled (no trigger
notifies on a worker): :mod:`.nodes`, and docs/notifications.md "On Citus".

The notifications service is cross-tenant: connect as the jobs role, which bypasses
row-level security. docs/notifications.md says what is promised and what is not.
"""

from .events import AlertEvent, Operation, Position
from .stream import AlertListener, listen_alerts
from .wakeups import ALERT_CHANNEL

__all__ = ["ALERT_CHANNEL", "AlertEvent", "AlertListener", "Operation", "Position", "listen_alerts"]
