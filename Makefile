# lb-service: every set-up and check goes through these targets; CI calls the same ones.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
# Re-install whenever the dependency list changes.
STAMP  := $(VENV)/.installed
LISTEN ?= 127.0.0.1:50051

.DEFAULT_GOAL := help
.PHONY: help install run cluster demo test test-fast lint lint-deploy protos check-protos fmt clean bench bench-cluster bench-probing soak simulate

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "lb-service needs Python 3.11+; set PYTHON=python3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

install: $(STAMP) ## create .venv and install the service with its dev tools

run: $(STAMP) ## serve on $(LISTEN) with the defaults
	$(BIN)/lb-service serve --listen $(LISTEN)

cluster: $(STAMP) ## 3 replicas on 127.0.0.1:50061-50063 sharing one Redis (own on :6390 unless REDIS_URL)
	BIN=$(BIN) bash scripts/cluster.sh

# DEMO_SECONDS=20 make demo: a shorter run (the default is 60 s of traffic, ~65 s in all).
demo: $(STAMP) ## emulated fleet + lb-service + dispatcher + loads --watch; an agent dies, one is drained (~65 s)
	$(PY) scripts/demo.py $(if $(DEMO_SECONDS),--seconds $(DEMO_SECONDS))

test: $(STAMP) ## run the whole suite with branch coverage (fails under 90%)
	$(BIN)/pytest --cov --cov-report=term $(PYTEST_ARGS)

# The fast tier, for the edit-test loop: the core's unit tests in-process (strategies,
# decisions, health, the store contract on the memory store, the servicer through grpc_testing,
# config and public surface). Left out: tests marked `redis` (a real Redis server) or
# `slow` (long equivalence runs), and the layers that start servers or processes (e2e,
# cli, cluster, reliability, simulate, bench). Not a replacement for `make test`: CI
# runs everything, with coverage.
FAST_TESTS := tests/strategies tests/core tests/store tests/service tests/health \
	tests/test_config.py tests/test_declared.py tests/test_public_api.py tests/test_packaging.py

test-fast: $(STAMP) ## the core's unit tests without Redis, sockets or coverage (~15 s)
	$(BIN)/pytest -m 'not redis and not slow' $(FAST_TESTS) $(PYTEST_ARGS)

soak: $(STAMP) ## reliability tests at full size: 60 s soak, 16 clients, deeper fuzz and invariants (~5 min)
	LB_RELIABILITY_SIZE=full HYPOTHESIS_PROFILE=thorough $(BIN)/pytest -s -p no:cacheprovider tests/reliability $(PYTEST_ARGS)

bench: $(STAMP) ## run the benchmarks (about 3½ min on 2 cores): writes BENCHMARKS.md and its plot
	$(PY) -m bench --output BENCHMARKS.md --plot bench/decision-cost.png

bench-cluster: $(STAMP) ## decisions/s with 1, 2, 3 replicas on one Redis vs memory (~1½ min): bench/cluster.md
	$(PY) -m bench.cluster --output bench/cluster.md

bench-probing: $(STAMP) ## what probing 1,000 emulated agents at 1 s costs the server (~2 min): bench/probing.md
	$(PY) -m bench.probing --output bench/probing.md

#: Seeds every simulator target is checked on; uneven fleets and bypass run at both loads.
SIM_SEEDS ?= 1-5
SIM_UNEVEN := uneven-tiers mixed-fleet heterogeneous
SIM_BOTH_LOADS := $(SIM_UNEVEN) bypass swap
SIM_OTHER := equal stale-reports degrading

simulate: $(addprefix simulate-,$(SIM_BOTH_LOADS) $(SIM_OTHER)) ## every shipped scenario on seeds 1-5, uneven fleets at 60% and 85% (~25 min; make -j2 halves it): docs/simulation/

# One scenario: the targets on every seed (report.txt, results.json), plots of seed 1.
simulate-%: $(STAMP)
	@mkdir -p docs/simulation/$*
	@loads=""; case " $(SIM_BOTH_LOADS) " in *" $* "*) loads="--utilisation 0.6 --utilisation 0.85";; esac; \
	$(BIN)/lb-service simulate scenarios/$*.yaml --seeds $(SIM_SEEDS) $$loads --check-targets \
		--json docs/simulation/$*/results.json > docs/simulation/$*/report.txt 2>/dev/null; \
	status=$$?; sed -n '/^Targets at/,/^$$/p' docs/simulation/$*/report.txt | sed 's/^/$*: /'; \
	$(BIN)/lb-service simulate scenarios/$*.yaml --seeds 1 $$loads --quiet --plots docs/simulation/$* \
		|| exit 1; \
	[ $$status -eq 0 ] || { echo "$*: targets missed (docs/simulation/$*/report.txt)"; exit 1; }

lint: $(STAMP) check-protos lint-deploy ## ruff, mypy --strict on lb_service/ and tests/, buf lint, generated-code freshness, deploy files
	$(BIN)/buf lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Offline: no image is built, no cluster is reached. --strict rejects unknown fields,
# so a misspelt key fails instead of being silently dropped by the API server.
lint-deploy: $(STAMP) ## hadolint on the Dockerfile; deploy/kubernetes/ against the Kubernetes schemas
	$(BIN)/hadolint Dockerfile
	$(BIN)/kubernetes-validate --strict --quiet deploy/kubernetes/*.yaml

fmt: $(STAMP) ## format and auto-fix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

protos: $(STAMP) ## regenerate generated/ from protos/
	rm -rf generated/lb
	BIN=$(BIN) scripts/gen_protos.sh generated

check-protos: $(STAMP) ## fail when generated/ is not what protos/ produces
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	BIN=$(BIN) scripts/gen_protos.sh "$$tmp" && \
	diff -r -x __pycache__ "$$tmp/lb" generated/lb >/dev/null || \
	{ echo "generated/ is stale: run 'make protos' and commit the result" >&2; exit 1; }

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov *.egg-info
