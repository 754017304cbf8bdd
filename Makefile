# Two commands on a fresh machine:  `make demo` (install + tiny streaming NEST pretraining) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_data

.PHONY: install sysdeps demo test clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(MAKE) --no-print-directory sysdeps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -c constraints.txt -e ".[test]"
	$(VENV)/bin/streaming-ssl-s3prl install-hook   # editable installs do not ship the s3prl hub hook (.pth)
	touch $@

# espeak-ng makes the local speech corpus; nothing is downloaded at run time.
sysdeps:
	@command -v espeak-ng >/dev/null || { \
	  echo "installing espeak-ng (Debian/Ubuntu)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q espeak-ng; }

test: install
	$(PY) -m pytest tests

clean:
	rm -rf $(DEMO_DIR) nemo_experiments .pytest_cache
