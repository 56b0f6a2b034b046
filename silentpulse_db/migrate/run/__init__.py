"""Running a plan on a connection that holds the migration lock, and explaining failures.

``applier.py`` walks the plan; each step runs ``in_transaction.py`` (one
transaction with its version row, table-lock retries in ``lock_retries.py``,
the failed statement found by ``locate.py``) or ``outside_transaction.py``
(golang-migrate's dirty protocol; ``index_healing.py`` for concurrent index
builds). ``packing.py`` says what travels in each simple-query message (a
file cut into chunks, or small schema-only files several to one, which
``sent_together.py`` sends). ``error_messages.py`` turns a failure into the
operator's typed error.
"""
