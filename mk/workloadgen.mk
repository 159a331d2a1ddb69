# Workload generator targets (services/workloadgen).
WG_BENCH_ARGS ?=

.PHONY: bench-workloadgen test-workloadgen

bench-workloadgen: $(STAMP)  ## One generator, 10,000 sessions vs a no-op scheduler: turns/s, send lateness p50/p99, CPU.
	$(BIN)/python -m symphony_workloadgen.bench $(WG_BENCH_ARGS)

test-workloadgen: $(STAMP)  ## The workload generator's tests.
	$(BIN)/pytest -q tests/workloadgen
