# The two commands the README starts with: `make run` and `make test`.
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
CORES ?= all
# Model-bound rules declare gpu=1, so that one runs per GPU. Without a GPU they are CPU jobs like any other,
# bounded by --cores alone: as many may run as there are cores.
GPUS ?= $(shell n=$$(nvidia-smi -L 2>/dev/null | grep -c '^GPU'); [ "$$n" -gt 0 ] && echo $$n || nproc)

.PHONY: setup run test lint report clean
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh $(VENV)
	touch $@

# The whole workflow on the embedded demo (config/config.yaml).
run: setup
	PATH="$(BIN):$$PATH" snakemake --cores $(CORES) --resources gpu=$(GPUS)

test: setup
	PATH="$(BIN):$$PATH" python -m pytest

lint: setup
	PATH="$(BIN):$$PATH" snakemake --lint

report: setup
	PATH="$(BIN):$$PATH" snakemake --report results/demo/snakemake-report.html

clean:
	rm -rf results .snakemake
