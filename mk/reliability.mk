# Reliability and security targets (owner: reliability). See docs/reliability.md.
.PHONY: test-reliability

test-reliability: $(STAMP)  ## Faults on the live stack, soak, fuzzing, limits, TLS/API keys (~8 min); prints the figures.
	@command -v openssl >/dev/null || { echo "error: the TLS tests need the openssl CLI"; exit 1; }
	SYMPHONY_TEST_RELIABILITY=1 $(BIN)/pytest tests/reliability -q
