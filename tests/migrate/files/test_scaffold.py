"""`create` scaffolding (files/scaffold.py): the next pair, and the naming rules."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from silentpulse_db import MigrationSourceError
from silentpulse_db.migrate.files.scaffold import create_migration

from helpers import write_migrations


def test_create_writes_the_next_pair(tmp_path: Path) -> None:
    write_migrations(tmp_path, {4: ("add_t4", "CREATE TABLE t4 ();", "DROP TABLE t4;")})
    up, down = create_migration(tmp_path, "add_tags_table")
    assert (up.name, down.name) == (
        "000005_add_tags_table.up.sql",
        "000005_add_tags_table.down.sql",
    )
    assert up.read_text().startswith("-- 000005_add_tags_table:")


def test_create_in_an_empty_folder_starts_at_one(tmp_path: Path) -> None:
    up, _ = create_migration(tmp_path, "create_index_assets_hostname")
    assert up.name == "000001_create_index_assets_hostname.up.sql"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("AddTags", "snake_case"),
        ("add-tags", "snake_case"),
        ("add__tags", "snake_case"),
        ("tags_table", "verb prefix"),
        ("add", "verb prefix"),
        ("1_add_tags", "snake_case"),
    ],
)
def test_create_refuses_bad_names(tmp_path: Path, name: str, reason: str) -> None:
    with pytest.raises(MigrationSourceError, match=reason):
        create_migration(tmp_path, name)
    assert list(tmp_path.iterdir()) == []


def test_create_refuses_a_used_name(tmp_path: Path) -> None:
    write_migrations(tmp_path, {4: ("add_tags", "CREATE TABLE tags ();", "DROP TABLE tags;")})
    with pytest.raises(MigrationSourceError, match="already used by .*000004_add_tags.up.sql"):
        create_migration(tmp_path, "add_tags")


def test_make_migration_target(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[3]
    target = tmp_path / "silentpulse_db" / "migrations"
    target.mkdir(parents=True)
    r = subprocess.run(
        ["make", "-s", "-C", str(root), "migration", "name=add_x_table", f"MIGRATIONS={target}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert (target / "000001_add_x_table.up.sql").exists()
    r = subprocess.run(
        ["make", "-s", "-C", str(root), "migration", "name=BadName", f"MIGRATIONS={target}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode != 0 and "snake_case" in r.stderr
