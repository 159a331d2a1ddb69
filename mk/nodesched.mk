# Node scheduler targets (owner: nodesched).
.PHONY: validate-sim bench-nodesched

validate-sim: $(STAMP)  ## Check the sim engine against CALIBRATION.md (table; non-zero exit on a FAIL).
	$(BIN)/python -m symphony_nodesched.validate

bench-nodesched: $(STAMP)  ## Node figures: follow-up TTFT per K,V tier, simulated node speed.
	$(BIN)/python -m symphony_nodesched.bench
