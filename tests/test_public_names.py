"""The public surface: a narrow top level for services, the operator verbs in
silentpulse_db.migrate, and the names that moved still working (with a warning)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import warnings

import pytest

import silentpulse_db
from silentpulse_db import defaults, migrate

MOVED_TO_MIGRATE = sorted(
    name for name, home in silentpulse_db._MOVED.items() if home == "silentpulse_db.migrate"
)


def test_every_public_name_resolves_without_a_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for module in (silentpulse_db, migrate):
            for name in module.__all__:
                assert getattr(module, name) is not None, (module.__name__, name)


@pytest.mark.parametrize("name", sorted(silentpulse_db._MOVED))
def test_a_moved_name_still_works_and_says_where_it_went(name: str) -> None:
    home = importlib.import_module(silentpulse_db._MOVED[name])
    assert name not in silentpulse_db.__all__ and name not in dir(silentpulse_db)
    with pytest.warns(DeprecationWarning, match=rf"use {home.__name__}\.{name} ") as warned:
        old = getattr(silentpulse_db, name)
    assert old is getattr(home, name)
    assert warned[0].filename == __file__  # the line that used the old name


def test_the_operator_verbs_are_all_in_migrate() -> None:
    assert set(MOVED_TO_MIGRATE) <= set(migrate.__all__)
    for name in ("up", "down", "goto", "force", "version", "status", "drift", "check"):
        assert inspect.iscoroutinefunction(getattr(migrate, name)), name
    assert migrate.run_migrations is silentpulse_db.run_migrations


def test_no_verb_shares_its_name_with_a_module_of_migrate() -> None:
    """Importing a submodule binds its name on the package: a verb named like one would
    turn into that module the first time the module loads (``drift`` did)."""
    modules = {info.name for info in pkgutil.iter_modules(migrate.__path__)}
    assert not modules & set(migrate.__all__), modules & set(migrate.__all__)
    importlib.import_module("silentpulse_db.migrate.schema_diff.compare")
    assert inspect.iscoroutinefunction(migrate.drift)


@pytest.mark.parametrize("name", ["StatusReport", "StatusRow"])
def test_status_records_still_come_from_their_old_room(name: str) -> None:
    from silentpulse_db.results import migrations, status

    with pytest.warns(DeprecationWarning, match=rf"use silentpulse_db\.results\.status\.{name} "):
        old = getattr(migrations, name)
    assert old is getattr(status, name) is getattr(silentpulse_db.results, name)


@pytest.mark.parametrize(
    ("old", "new"),
    [("LOCK_TIMEOUT", "MIGRATION_LOCK_TIMEOUT"), ("DDL_LOCK_TIMEOUT", "TABLE_LOCK_TIMEOUT")],
)
def test_a_renamed_default_still_works_and_names_its_lock(old: str, new: str) -> None:
    with pytest.warns(DeprecationWarning, match=rf"defaults\.{old} is deprecated .* use {new}$"):
        value = getattr(defaults, old)
    assert value == getattr(defaults, new)
    with pytest.raises(AttributeError, match="no attribute 'LOCK_WAIT'"):
        defaults.LOCK_WAIT  # noqa: B018  (any other name is no attribute, as before)
