# Observability targets (metrics, traces, dashboards). See docs/observability.md.
.PHONY: test-observability dashboards bench-observability

test-observability: $(STAMP)  ## Every dashboard query against a real Prometheus (installs it) and the trace test.
	e2e/observability/install-prometheus.sh
	SYMPHONY_TEST_PROMETHEUS=1 $(BIN)/pytest -q tests/observability

dashboards: $(STAMP)  ## Regenerate charts/symphony/dashboards/*.json from e2e/observability/dashboards.py.
	$(BIN)/python e2e/observability/dashboards.py

bench-observability: $(STAMP)  ## Tracing cost: the same seeded run with tracing off and on (CPU ms/turn, TTFT).
	$(BIN)/python e2e/observability/bench_tracing.py $(OBS_BENCH_ARGS)
