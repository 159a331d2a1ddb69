# The `symphony` command's own targets: the virtual-time simulator and the policy study.

.PHONY: study bench-sim

study: $(STAMP)  ## Regenerate docs/results/ (the policy study; about 30 minutes on 2 cores).
	$(BIN)/symphony study --out docs/results --jobs 2 --duration 240 --warmup 60

bench-sim: $(STAMP)  ## Simulator speed: 1,024 users, 10 virtual minutes, 8 engines, one core.
	$(BIN)/symphony simulate --users 1024 --policies symphony --duration 600 --warmup 60 --jobs 1
