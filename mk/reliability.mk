# Reliability and security targets (owner: reliability). See docs/reliability.md.
.PHONY: test-reliability

test-reliability: $(STAMP)  ## Faults on the live stack, soak, fuzzing, limits, TLS/API keys (~8 min); prints the figures.
	@command -v openssl >/dev/null || { echo "error: the TLS tests need the openssl CLI"; exit 1; }
	@# grpcio >= 1.80 can crash a child forked (with preexec_fn) while this process has gRPC calls in
	@# flight (grpc/grpc#43055); its fork handlers are not needed: every child execs at once.
	GRPC_ENABLE_FORK_SUPPORT=false GRPC_VERBOSITY=ERROR SYMPHONY_TEST_RELIABILITY=1 $(BIN)/pytest tests/reliability -q
