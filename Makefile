# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
RUNDIR ?= run/dev
PYTEST_ARGS ?=

.PHONY: run test venv lint typecheck bench clean

$(BIN)/mssctl: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(BIN)/mssctl

venv: $(BIN)/mssctl

run: venv
	test -f $(RUNDIR)/mss.yaml || $(BIN)/mssctl init $(RUNDIR) --demo
	$(BIN)/mssctl serve --config $(RUNDIR)/mss.yaml --banner

test: venv
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check mssmtpd imapd policy storage certs conf mssctl

typecheck: venv
	$(BIN)/mypy

bench: venv
	$(BIN)/python bench/smtp_ingest.py
	$(BIN)/python bench/imap_bench.py

clean:
	rm -rf $(VENV) run build *.egg-info
