# Reliability and security targets (owner: reliability). See docs/reliability.md.
.PHONY: test-reliability

test-reliability: $(STAMP)  ## Fault tests on the live local stack, fuzzing of the front doors, TLS/API keys; prints figures.
	$(BIN)/pytest tests/reliability -q
