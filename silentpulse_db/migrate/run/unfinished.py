"""What a dirty version stands for, read from the catalog under the migration lock.

Dirty V is golang-migrate's "the move to version V stopped partway": V's up file, or
the down file of the version above V (a down writes the version below it dirty). Where
the files are concurrent index builds or drops, the catalog tells which, and how far it
got; the history (the version this engine last recorded clean) tells the rest:

0. a migration whose up drops an index concurrently and whose down builds it again
   stopped on its way the history says: either of its files runs again;
1. the index of the version above V is there (INVALID, or still valid): that version's
   down stopped partway (unless the history says the move was V's up);
2. V's own index is missing or INVALID: V's build did not complete;
3. V's index is complete, valid and as its file defines it (the build finished on the
   server after its client was gone), and the version above has no index left: the
   schema is V's, whichever way the move went (the history says which, where it can).

The plan then runs the file of that migration that takes the schema where the request
goes (plan._rerun): a concurrent build or drop runs again safely (index_healing.py
waits for a backend still at it, and skips what is complete). Anything else is left to
the operator, with a message true to the direction (plan.dirty_message).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ...results.migrations import VersionState
from ..files.source import Direction, Migration, MigrationSource
from ..plan import NIL_VERSION, Unfinished
from ..version_table import VersionStore
from .index_healing import (
    IndexFacts,
    build_facts,
    built_index,
    dropped_index,
    index_facts,
    wait_for_builders,
)


class _Side(NamedTuple):
    """One migration beside the dirty version, and its index (if its files build or
    drop one concurrently)."""

    migration: Migration
    name: str | None = None  # the index
    builds: bool = False  # its up file is a CREATE INDEX CONCURRENTLY
    drops: bool = False  # its down file is a DROP INDEX CONCURRENTLY
    facts: IndexFacts = IndexFacts(False)

    @property
    def complete(self) -> bool:
        """Its index built, valid and as its up file defines it."""
        return self.builds and self.facts.valid and self.facts.matches is not False

    def seen(self, what: str) -> str:
        """What the catalog shows of this migration's ``what`` ("drop", "build")."""
        return f"its concurrent {what} stopped partway ({self.facts.describe(str(self.name))})"


async def read_unfinished(
    conn: Any, source: MigrationSource, state: VersionState, store: VersionStore, *, wait: float
) -> Unfinished | None:
    """What the dirty ``state`` stands for, and which file a rerun may run again; None
    when it is clean, or at a version without a file. ``wait``: how long to wait for a
    backend still building or dropping one of the indexes (0: read them as they are)."""
    if not state.dirty:
        return None
    version = state.version
    own = None if version is None else source.get(version)
    if version is not None and own is None:
        return None
    above = next((m for m in source.migrations if version is None or m.version > version), None)
    mine = None if own is None else await _side(conn, own, wait)
    next_up = None if above is None else await _side(conn, above, wait)
    moved = await _direction(source, store, version, above)
    # 0. A migration that drops an index concurrently and whose down builds it again (a
    # redundant index gone): either file, run again, finishes its move whatever state it
    # stopped in (index_healing.before), so the history's direction is enough, and says
    # which migration it was where another's file names the same index.
    turned = own if moved == "up" else above if moved == "down" else None
    if turned is not None and dropped_index(turned.up) and built_index(turned.down):
        what = "drop" if moved == "up" else "build (its down)"
        return Unfinished(
            turned,
            moved,
            reruns_up=True,
            reruns_down=True,
            seen=f"version {turned.version}'s concurrent {what} of index "
            f"{dropped_index(turned.up)} stopped partway",
        )
    # 1. The index of the version above is there: its down stopped partway.
    if next_up is not None and next_up.name is not None and next_up.facts.exists and moved != "up":
        stray = next_up.builds and next_up.facts.matches is False and next_up.facts.valid
        if stray or (mine is not None and mine.builds and not mine.complete):
            return Unfinished(next_up.migration, moved, seen=_both(mine, next_up))
        return Unfinished(
            next_up.migration,
            "down",
            reruns_up=next_up.builds,
            reruns_down=next_up.drops,
            seen=f"the down of version {next_up.migration.version}: " + next_up.seen("drop"),
        )
    # 2. Its own concurrent build did not complete.
    if mine is not None and mine.builds and not mine.complete:
        if mine.facts.valid:  # valid, but another index than the file's: not ours to touch
            return Unfinished(mine.migration, moved, seen=mine.facts.describe(str(mine.name)))
        return Unfinished(
            mine.migration,
            "up",
            reruns_up=True,
            reruns_down=mine.drops,
            seen=mine.seen("build"),
        )
    # 3. The schema is the dirty version's.
    if moved == "down" and next_up is not None and next_up.drops:
        return Unfinished(
            next_up.migration,
            "down",
            reruns_up=next_up.builds,
            reruns_down=True,
            seen=f"the down of version {next_up.migration.version} dropped index "
            f"{next_up.name} and stopped before recording version {version}",
        )
    if (
        mine is not None
        and mine.complete
        and (moved == "up" or next_up is None or next_up.name is not None)
    ):
        return Unfinished(
            mine.migration,
            "up",
            reruns_up=True,
            reruns_down=mine.drops,
            seen=f"index {mine.name} is built, valid and as its file defines it (the build "
            "finished after the run that started it stopped)",
        )
    # 4. Nothing the catalog proves: the operator decides.
    stopped = next_up if moved == "down" else mine or next_up
    return None if stopped is None else Unfinished(stopped.migration, moved)


async def _side(conn: Any, migration: Migration, wait: float) -> _Side:
    built = built_index(migration.up)
    dropped = dropped_index(migration.down)
    index = built[0] if built is not None else dropped
    if index is None:
        return _Side(migration)
    file = migration.up if built is not None else migration.down
    if wait > 0 and file is not None:
        await wait_for_builders(conn, file, index, wait)
    if built is not None and file is not None:
        facts = await build_facts(conn, file, index, built[1])
    else:
        facts = await index_facts(conn, index)
    return _Side(migration, index, built is not None, dropped is not None, facts)


def _both(mine: _Side | None, above: _Side) -> str:
    parts = [
        f"the index of version {above.migration.version}: {above.facts.describe(str(above.name))}"
    ]
    if mine is not None and mine.builds:
        parts.append(f"version {mine.migration.version}'s: {mine.facts.describe(str(mine.name))}")
    return "; ".join(parts) + "; which schema to keep is the operator's call"


async def _direction(
    source: MigrationSource, store: VersionStore, version: int | None, above: Migration | None
) -> Direction | None:
    """ "up" when this engine last recorded the version below the dirty one (the move was
    its up), "down" when it last recorded the version above (the move was that one's
    down), None when the history does not tell (golang-migrate keeps none)."""
    reached = await _last_recorded(source, store)
    if reached is None:
        return None
    (where,) = reached
    if version is not None and where == source.previous_version(version):
        return "up"
    if above is not None and where == above.version:
        return "down"
    return None


async def _last_recorded(source: MigrationSource, store: VersionStore) -> tuple[int | None] | None:
    """The version this engine last recorded clean for the store's table (in a 1-tuple:
    None is "no version"), from the newest history row; None when unknown."""
    newest = await store.recent(1)
    if not newest:
        return None  # no history (golang-migrate's alone), or none of this set's
    row = newest[0]
    version, direction = row.version, row.direction
    if direction == "down":
        return (source.previous_version(version),) if source.get(version) else None
    return (None if version == NIL_VERSION else version,)
