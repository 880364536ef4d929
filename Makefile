# The two commands the README starts with: `make run` and `make test`.
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
CORES ?= all

.PHONY: setup run test lint report clean
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh $(VENV)
	touch $@

# The whole workflow on the embedded demo (config/config.yaml).
run: setup
	PATH="$(BIN):$$PATH" snakemake --cores $(CORES) --resources gpu=1

test: setup
	PATH="$(BIN):$$PATH" python -m pytest

lint: setup
	PATH="$(BIN):$$PATH" snakemake --lint

report: setup
	PATH="$(BIN):$$PATH" snakemake --report results/demo/snakemake-report.html

clean:
	rm -rf results .snakemake
