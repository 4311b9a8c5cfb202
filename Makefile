# Two commands for a fresh machine with only Python 3.11, pip and make:
#   make demo   installs everything into .venv and runs the pipeline (flows/pipeline.py)
#   make test   installs everything into .venv and runs the whole test suite
# uv is bootstrapped into .tools/ with pip; .venv is synced from the committed uv.lock.

PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .tools/bin/uv

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
# a first flow in a fresh PREFECT_HOME migrates the temporary server's database (20-30 s here)
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export UV_PYTHON_DOWNLOADS := never

.PHONY: demo demo-small test lint install clean bench docs

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/python -m pip install --quiet uv==$(UV_VERSION)

# --compile-bytecode: where PYTHONDONTWRITEBYTECODE is set (this machine's image sets
# it), Python never writes .pyc files, so every process (each mlflow and prefect server,
# worker and command line a test starts) compiled mlflow and prefect from source again:
# `import mlflow` took 5 s instead of 1.7 s
.venv/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --all-extras --compile-bytecode --python $(PYTHON)
	touch $@

install: .venv/.synced

demo: .venv/.synced
	.venv/bin/python flows/pipeline.py

demo-small: .venv/.synced
	.venv/bin/python flows/demo.py

# two workers (each with its own Prefect API and SQLite-backed mlflow server); the tests of
# each other expensive server share a worker (tests/conftest.py SERVER_GROUPS)
test: .venv/.synced
	.venv/bin/python -m compileall -q tracking_tasks tests flows
	.venv/bin/python -m pytest -n 2 --dist loadgroup

lint: .venv/.synced
	.venv/bin/ruff check tracking_tasks flows tests bench
	.venv/bin/ruff format --check tracking_tasks flows tests bench
	.venv/bin/mypy tracking_tasks

clean:
	rm -rf .venv .tools .pytest_cache .mypy_cache .ruff_cache

bench: .venv/.synced
	.venv/bin/python -m bench

# NO_MKDOCS_2_WARNING: Material for MkDocs prints an end-of-life banner on every build
docs: .venv/.synced
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir site
