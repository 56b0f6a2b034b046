"""The architecture holds: a pure plan, no import of the package face from below, no cycles."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import silentpulse_db

PACKAGE = Path(silentpulse_db.__file__).parent


def test_plan_imports_no_driver_and_does_no_io() -> None:
    code = (
        "import sys, silentpulse_db.migrate.plan\n"
        "loaded = {'asyncpg', 'tenacity', 'pglast', 'socket'} & set(sys.modules)\n"
        "assert not loaded, loaded"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_cli_starts_without_what_up_does_not_need() -> None:
    # Each of these cost the `silentpulse-db up` start-up milliseconds (docs/benchmarks.md).
    # What `up` imports: the CLI's words and the module that runs up (cli/__init__.py).
    code = (
        "import sys, silentpulse_db.migrate.cli, silentpulse_db.migrate.cli.migrating\n"
        "unneeded = {'tenacity', 'pglast', 'cryptography', 'silentpulse_db.results.proofs',\n"
        "            'silentpulse_db.results.schema_jobs',\n"
        "            'silentpulse_db.schema.jobs', 'silentpulse_db.schema.partitions',\n"
        "            'silentpulse_db.migrate.run.applier',\n"
        "            'silentpulse_db.credentials', 'silentpulse_db.crypto',\n"
        "            'silentpulse_db.migrate.dryrun.preview', 'silentpulse_db.migrate.proofs',\n"
        "            'silentpulse_db.migrate.files.scaffold', 'silentpulse_db.results.status',\n"
        "            'silentpulse_db.migrate.status_reading', 'silentpulse_db.migrate.prerequisites',\n"
        "            'silentpulse_db.postgres.roles', 'silentpulse_db.postgres.databases',\n"
        "            'silentpulse_db.migrate.files.statements'}\n"
        "loaded = unneeded & set(sys.modules)\n"
        "assert not loaded, loaded"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("command", "unneeded"),
    [
        # create writes two files: no driver, no engine.
        (
            "create",
            {"asyncpg", "silentpulse_db.migrate.commands", "silentpulse_db.migrate.engine"},
        ),
        # status and version read: no runner, no dry run, no proofs.
        (
            "status",
            {"pglast", "silentpulse_db.migrate.run.applier", "silentpulse_db.migrate.proofs"},
        ),
        # the daily jobs: no migration engine.
        ("partitions", {"silentpulse_db.migrate.engine", "silentpulse_db.migrate.commands"}),
    ],
)
def test_each_command_imports_what_it_needs(command: str, unneeded: set[str]) -> None:
    """The module a command runs in (its row in cli/parser.py), imported as main does."""
    code = (
        "import sys\n"
        "from silentpulse_db.migrate.cli import parser, handler\n"
        f"args = parser.build_parser({command!r}).parse_args([{command!r}, 'x'][:{2 if command == 'create' else 1}])\n"
        "handler(args)\n"
        f"loaded = {unneeded!r} & set(sys.modules)\n"
        "assert not loaded, loaded"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_every_command_has_its_handler() -> None:
    from silentpulse_db.migrate.cli import DRY_RUN_COMMANDS, parser

    for name, command in parser.COMMANDS.items():
        module = importlib.import_module(f"silentpulse_db.migrate.cli.{command.module}")
        assert name in module.HANDLERS, (name, command.module)
    planning = importlib.import_module("silentpulse_db.migrate.cli.planning")
    assert set(planning.HANDLERS) == set(DRY_RUN_COMMANDS)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Modules of this package that ``path`` imports (relative imports resolved)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.startswith("silentpulse_db"):
                submodules = {
                    f"{target}.{a.name}" for a in node.names if _exists(f"{target}.{a.name}")
                }
                found.update(submodules)
                if len(submodules) < len(node.names):  # names taken from the module itself
                    found.add(target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("silentpulse_db"))
    return found


def _exists(module: str) -> bool:
    base = PACKAGE.parent / module.replace(".", "/")
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def test_nothing_below_the_face_imports_the_face() -> None:
    offenders = sorted(
        m for m, deps in _graph().items() if m != "silentpulse_db" and "silentpulse_db" in deps
    )
    assert offenders == []


def test_the_import_graph_has_no_cycles() -> None:
    graph = _graph()
    # A package's __init__ importing its own submodules is not a cycle of logic.
    edges = {
        m: {d for d in deps if d in graph and not m.startswith(d + ".")}
        for m, deps in graph.items()
    }
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, path: list[str]) -> bool:
        state[node] = 1
        for dep in edges[node]:
            if state.get(dep) == 1:
                cycle.extend([*path, node, dep])
                return True
            if dep not in state and visit(dep, [*path, node]):
                return True
        state[node] = 2
        return False

    for node in edges:
        if node not in state and visit(node, []):
            break
    assert cycle == []


def test_run_imports_nothing_from_dryrun() -> None:
    # The runner may not depend on the dry run: what both need (the lock a statement
    # takes) lives in migrate/files/, beside the statement splitter.
    dryrun = "silentpulse_db.migrate.dryrun"
    offenders = sorted(
        f"{module} -> {dep}"
        for module, deps in _graph().items()
        if module == "silentpulse_db.migrate.run"
        or module.startswith("silentpulse_db.migrate.run.")
        for dep in deps
        if dep == dryrun or dep.startswith(dryrun + ".")
    )
    assert offenders == []


def test_the_catalog_reader_imports_neither_of_its_readers() -> None:
    # check (proofs/) and drift (schema_diff/) read the catalog through migrate/catalog/:
    # the reader knows neither, so a kind added there serves both.
    readers = ("silentpulse_db.migrate.proofs", "silentpulse_db.migrate.schema_diff")
    offenders = sorted(
        f"{module} -> {dep}"
        for module, deps in _graph().items()
        if module == "silentpulse_db.migrate.catalog"
        or module.startswith("silentpulse_db.migrate.catalog.")
        for dep in deps
        if any(dep == reader or dep.startswith(reader + ".") for reader in readers)
    )
    assert offenders == []


def test_every_public_name_resolves() -> None:
    # The face loads most names lazily, from module paths written as strings.
    code = (
        "import silentpulse_db as s\n"
        "missing = [n for n in s.__all__ if not hasattr(s, n)]\n"
        "assert not missing, missing"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


MAX_MODULES = 12  # a folder past a dozen modules gets sub-rooms (docs/architecture.md)
MAX_LINES = 150  # no function or class longer


def test_no_folder_holds_more_than_a_dozen_modules() -> None:
    crowded = {}
    for folder in [PACKAGE, *(p for p in PACKAGE.rglob("*") if p.is_dir())]:
        modules = [p for p in folder.glob("*.py") if p.name != "__init__.py"]
        if len(modules) > MAX_MODULES:
            crowded[str(folder.relative_to(PACKAGE.parent))] = len(modules)
    assert crowded == {}


def test_no_two_names_in_a_folder_differ_by_a_plural() -> None:
    # lock.py beside locks.py told a reader nothing about which held what.
    clashes = []
    for folder in [PACKAGE, *(p for p in PACKAGE.rglob("*") if p.is_dir())]:
        names = {p.stem for p in folder.iterdir() if p.suffix == ".py" or p.is_dir()}
        clashes += [f"{folder.name}/{n}" for n in names if n + "s" in names]
    assert clashes == []


# Two modules of the same name make a traceback or a grep ambiguous ("which
# catalog.py?"). None is allowed today; a pair that must be is listed by its paths.
SHARED_NAMES_TODAY: dict[str, set[str]] = {}


def test_no_two_modules_share_a_name() -> None:
    by_name: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name not in {"__init__.py", "__main__.py"}:
            by_name.setdefault(path.name, set()).add(path.relative_to(PACKAGE).as_posix())
    shared = {name: paths for name, paths in by_name.items() if len(paths) > 1}
    new = {
        name: sorted(paths - SHARED_NAMES_TODAY.get(name, set()))
        for name, paths in shared.items()
        if not paths <= SHARED_NAMES_TODAY.get(name, set())
    }
    assert new == {}


# A module named like a folder elsewhere ("which proofs?"), or two names equal but for
# an underscore (dryrun/ beside dry_run.py), send a reader to the wrong room. The
# pairs there are today, each with the reason it stays; a new one fails the test.
NAMED_LIKE_A_FOLDER_TODAY = {
    "cli": "each package's command: migrate/cli/ (silentpulse-db), credentials/cli.py",
    "migrations": "results/migrations.py: what the verbs over the migrations/ return",
    "proofs": "results/proofs.py: what migrate/proofs/ (check, baseline) and drift return",
}


def test_no_module_is_named_like_a_folder_or_another_name_but_for_underscores() -> None:
    folders = {p.name for p in PACKAGE.rglob("*") if p.is_dir() and p.name != "__pycache__"}
    modules = {p.stem for p in PACKAGE.rglob("*.py")} - {"__init__", "__main__"}
    like_a_folder = (folders & modules) - set(NAMED_LIKE_A_FOLDER_TODAY)
    squeezed: dict[str, set[str]] = {}
    for name in folders | modules:
        squeezed.setdefault(name.replace("_", ""), set()).add(name)
    underscores = [sorted(names) for names in squeezed.values() if len(names) > 1]
    assert (sorted(like_a_folder), underscores) == ([], [])


# Names of one word's forms (migrate, migrating, migrations) read alike in a listing. The
# families there are today, each with what tells its members apart; a new member, or a
# new family, fails the test: name it for what it holds instead, or add it here with why.
ONE_WORD_TODAY = {
    "migrat": {
        # golang-migrate's own two names: its verb, and the folder its CLI's -path reads.
        "migrate": "the engine and the operator verbs (silentpulse_db.migrate)",
        "migrations": "the packaged SQL files; results/migrations.py, what runs over them return",
        "migrating": "migrate/cli/migrating.py: the CLI's commands that migrate",
    },
    "distribut": {
        "distribution": "schema/distribution.py: the schema distributed on Citus",
        "distributing": "migrate/cli/distributing.py: the CLI's distribute command",
    },
}


def _stem(name: str) -> str:
    """A name without its word ending: migrate, migrating and migrations alike."""
    return re.sub(r"(ions?|ing|es|s|e)$", "", name)


def test_no_two_names_are_forms_of_one_word_unless_listed() -> None:
    folders = {p.name for p in PACKAGE.rglob("*") if p.is_dir() and p.name != "__pycache__"}
    modules = {p.stem for p in PACKAGE.rglob("*.py")} - {"__init__", "__main__"}
    families: dict[str, set[str]] = {}
    for name in folders | modules:
        families.setdefault(_stem(name), set()).add(name)
    alike = {stem: names for stem, names in families.items() if len(names) > 1}
    assert alike == {stem: set(names) for stem, names in ONE_WORD_TODAY.items()}


def test_no_function_or_class_is_longer_than_150_lines() -> None:
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.name} ({lines} lines)")
    assert long == []


def test_dir_of_the_package_lists_what_users_import() -> None:
    code = (
        "import silentpulse_db as s\n"
        "names = dir(s)\n"
        "assert 'run_migrations' in names and 'create_pool' in names, names\n"
        "assert not {'Any', 'TYPE_CHECKING', 'importlib'} & set(names), names\n"
        "assert set(s.__all__) <= set(names)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# Tests that run across the package on a tier of their own, not one module's.
TEST_TIERS = {"citus"}


def test_the_tests_folders_mirror_the_package() -> None:
    """A test of silentpulse_db/x/y.py is found under tests/x/, both ways: a folder of tests
    that is not a folder of the package is a tier (a Citus cluster) named in TEST_TIERS,
    and every folder of the package with a module has its folder of tests."""
    tests = Path(__file__).parent
    strays = []
    for folder in sorted({path.parent for path in tests.rglob("test_*.py")}):
        where = folder.relative_to(tests)
        if where.parts and where.parts[0] not in TEST_TIERS and not (PACKAGE / where).is_dir():
            strays.append(where.as_posix())
    assert strays == [], "tests/<folder> with no silentpulse_db/<folder>: " + ", ".join(strays)
    untested = [
        folder.relative_to(PACKAGE).as_posix()
        for folder in sorted(p for p in PACKAGE.rglob("*") if p.is_dir())
        if any(module.name != "__init__.py" for module in folder.glob("*.py"))
        and not any((tests / folder.relative_to(PACKAGE)).glob("test_*.py"))
    ]
    assert untested == [], "silentpulse_db/<folder> with no tests/<folder>: " + ", ".join(untested)
