# Global scheduler targets (owner: scheduler).
.PHONY: bench-scheduler test-scheduler

bench-scheduler: $(STAMP)  ## Scheduler decisions/s (1k/10k/100k sessions) and latency it adds (live, fake nodes).
	$(BIN)/python -m symphony_scheduler.bench $(BENCH_ARGS)

test-scheduler: $(STAMP)  ## Scheduler unit, service, HTTP front door and process tests.
	$(BIN)/pytest tests/scheduler -q
