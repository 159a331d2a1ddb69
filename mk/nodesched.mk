# Node scheduler targets (owner: nodesched).
.PHONY: validate-sim

validate-sim: $(STAMP)  ## Check the sim engine against CALIBRATION.md (table; non-zero exit on a FAIL).
	$(BIN)/python -m symphony_nodesched.validate
