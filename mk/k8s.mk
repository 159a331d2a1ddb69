# Kubernetes packaging: images, Helm chart checks, container and kind end-to-end tests.
IMAGE_PREFIX ?= localhost/symphony-
IMAGE_TAG ?= dev

.PHONY: images test-chart e2e-containers e2e-kind

images:  ## Build the scheduler, nodesched and workloadgen images (docker or podman, whichever exists).
	e2e/containers/base-image.sh
	IMAGE_PREFIX=$(IMAGE_PREFIX) IMAGE_TAG=$(IMAGE_TAG) docker/build.sh

test-chart: $(STAMP)  ## Render, lint and schema-validate the Helm chart (Kubernetes 1.30 and 1.33).
	$(BIN)/pytest tests/chart -q

e2e-containers:  ## Real images on a Podman network: scheduler + 2 sim nodes + a workload run (needs root).
	e2e/containers/run.sh

e2e-kind:  ## kind cluster + helm install (engine: sim) + the workload Job (needs Docker, kind, helm).
	e2e/kind/run.sh
