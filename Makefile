# Two commands on a fresh machine: `make run` and `make test`.
# Both create .venv (Python >= 3.11) and install the project into it first.
# The distribution's interpreter where it is recent enough and can make a
# venv (Debian builds it with profile-guided and link-time optimisation: the
# server ran 15-20 % faster on it than on one built without
# --enable-optimizations, pyenv's default); otherwise python3 from PATH.
SYSTEM_PYTHON := $(shell /usr/bin/python3 -c 'import sys, ensurepip; sys.exit(sys.version_info < (3, 11) or not ensurepip.version())' >/dev/null 2>&1 && echo /usr/bin/python3)
PYTHON ?= $(or $(SYSTEM_PYTHON),python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
RUNDIR ?= run/dev
# Extra arguments for the first `mssctl init` of `make run`, e.g. --port-offset 10000
INIT_ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test venv lint typecheck bench clean

# The installed console script doubles as the "install is up to date" stamp.
$(BIN)/mssctl: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "Python >= 3.11 is needed (found: $$($(PYTHON) --version 2>&1))"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || \
	  { rm -rf $(VENV); echo "cannot create $(VENV): on Debian/Ubuntu, apt-get install python3-venv"; exit 1; }
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(BIN)/mssctl

venv: $(BIN)/mssctl

# First run: a demo instance in $(RUNDIR) (settings, dev PKI, keys, database,
# demo accounts); then serve it in the foreground. Ctrl-C stops it.
run: venv
	@test -f $(RUNDIR)/mss.yaml || $(BIN)/mssctl init $(RUNDIR) --demo $(INIT_ARGS)
	exec $(BIN)/mssctl serve --config $(RUNDIR)/mss.yaml --banner

test: venv
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check mssmtpd imapd policy storage certs conf mssctl

typecheck: venv
	$(BIN)/mypy

bench: venv
	$(BIN)/python bench/smtp_ingest.py
	$(BIN)/python bench/imap_bench.py
	$(BIN)/python bench/imap_sessions.py
	$(BIN)/python bench/flow_matrix.py
	$(BIN)/python bench/fuzz_worst.py
	$(BIN)/python bench/import_bench.py

clean:
	rm -rf $(VENV) run build *.egg-info
