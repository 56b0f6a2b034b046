"""The packaged migration files as they are authored: what every later one must do."""

from __future__ import annotations


def test_every_later_transactional_migration_sets_a_lock_timeout() -> None:
    """A busy table makes a migration fail and retry, not stall the application (issue 8).

    000001-000003 are applied in production and immutable; from 000004 on, each
    transactional file starts with SET LOCAL lock_timeout. A file that is one
    CREATE/DROP INDEX CONCURRENTLY cannot (it runs outside a transaction).
    """
    from silentpulse_db.migrate import load_source
    from silentpulse_db.migrate.files.statements import analyze

    missing = []
    for migration in load_source().migrations:
        if migration.version <= 3:
            continue
        for file in (migration.up, migration.down):
            assert file is not None, f"{migration.version}: every packaged version has both files"
            parsed = analyze(file.sql, file.location)
            if parsed.non_transactional:
                assert len(parsed.statements) == 1, f"{file}: a concurrent build goes alone"
                continue
            first = parsed.statements[0].sql.strip().lower()
            if not first.startswith("set local lock_timeout"):
                missing.append(str(file))
    assert missing == []
