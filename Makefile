# Every target creates the virtualenv it needs; nothing has to be installed by hand.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test demo citus-demo roundtrip lint typecheck bench migration clean data-model

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# Four workers on two cores: the suite mostly waits on PostgreSQL (pytest used 79 s of
# CPU in a 312 s serial run); each worker starts its own throwaway server, and the first
# that needs Citus starts the run's one cluster for all of them (docs/testing.md).
# TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 4
test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/python tools/demo.py

# The schema distributed by tenant on a throwaway Citus cluster (docs/scaling.md):
# migrate, distribute, a short workload of 4 tenants, the shard and node each tenant's
# rows live on. Skips with the reason where Citus is not installed;
# CITUS_DEMO_DATABASE_URL=<a coordinator's database> runs it there (it changes it).
citus-demo: $(STAMP)
	$(BIN)/python tools/citus_demo.py

# up -> down --all -> up and `check` on the packaged migrations (CI runs it).
roundtrip: $(STAMP)
	$(BIN)/python tools/demo.py --roundtrip

# docs/data-model.md from a migrated database's catalog (the suite fails when stale).
data-model: $(STAMP)
	$(BIN)/python tools/data_model.py

lint: $(STAMP)
	$(BIN)/ruff check silentpulse_db tests bench tools
	$(BIN)/ruff format --check silentpulse_db tests bench tools
	$(BIN)/mypy
	$(BIN)/squawk --config .squawk.toml silentpulse_db/migrations/*.sql

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

# make migration name=add_tags_table
MIGRATIONS ?= silentpulse_db/migrations
migration: $(STAMP)
	@test -n "$(name)" || { echo "usage: make migration name=add_x" >&2; exit 2; }
	@$(BIN)/silentpulse-db create --path $(MIGRATIONS) $(name)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
