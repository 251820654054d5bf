# Two commands do all the set-up on a fresh machine:
#   make run    the database (FerretDB on SQLite), the WeChat sandbox and the backend, with demo data
#   make test   ruff (rules and format) and the whole test suite against real servers
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DEBS   := fonts-noto-cjk poppler-utils libnss3-tools nginx-light libharfbuzz-subset0 libpango-1.0-0 libpangoft2-1.0-0 golang-go chromium

.PHONY: run test lint deps sysdeps pydeps ferretdb workers clean

run: deps
	WX_ENV=dev $(PY) -m scripts.devstack

test: deps lint
	$(PY) -m pytest $(PYTEST_ARGS)

# ruff's rules and its formatter: unformatted code fails like a lint error
lint: pydeps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

deps: sysdeps pydeps ferretdb

# Debian packages: the CJK font and HarfBuzz subsetting for contract PDFs, poppler's pdfsig and
# pdftoppm, nginx for the front-end test, Go to build FerretDB, chromium for the H5 pages' browser
# tests (driven by Playwright; no browser is ever downloaded). Installed only when missing.
sysdeps:
	@missing=""; for p in $(DEBS); do \
	  if [ "$$p" = golang-go ] && command -v go >/dev/null; then continue; fi; \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

pydeps: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[test]'
	touch $@

ferretdb:
	@scripts/install-ferretdb.sh >/dev/null

clean:
	rm -rf var .pytest_cache .ruff_cache
