# Real vLLM: the KV connector (vllm/) and the node scheduler's `vllm` backend. See docs/vllm.md.
.PHONY: test-vllm e2e-vllm

test-vllm: $(STAMP)  ## Connector store/bookkeeping and vllm backend tests (no vLLM needed).
	$(BIN)/pytest -q tests/vllm

e2e-vllm: $(STAMP)  ## Real vLLM (CPU build, tiny model): connector, 4-way TTFT measurement, stack run.
	PYTHON=$(CURDIR)/$(BIN)/python e2e/vllm/run.sh
