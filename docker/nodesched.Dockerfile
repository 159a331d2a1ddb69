# syntax=docker/dockerfile:1
# Symphony nodesched: node scheduler (K,V tier manager, engine adapter: sim or a vLLM sidecar)
# Build from the repository root: docker build -f docker/nodesched.Dockerfile -t symphony-nodesched .
# Dependencies are pinned by requirements/lock.txt; only the [nodesched] extra is installed.
ARG PYTHON_IMAGE=docker.io/library/python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# Dependencies first, pinned by the lock file: this layer stays cached while the sources change.
COPY pyproject.toml README.md docker/extra_requirements.py ./
COPY requirements/ requirements/
RUN python3 -m venv /opt/venv \
 && python3 extra_requirements.py nodesched > /tmp/requirements.txt \
 && /opt/venv/bin/pip install --quiet -c requirements/lock.txt -r /tmp/requirements.txt
# Then the project; its package spans several folders (see pyproject.toml's hatch wheel packages).
COPY proto/ proto/
COPY services/ services/
COPY vllm/ vllm/
RUN /opt/venv/bin/pip install --quiet --no-deps . \
 && /opt/venv/bin/pip install --quiet --no-deps --target /opt/symphony-plugins ./vllm \
 && /opt/venv/bin/pip check \
 && /opt/venv/bin/pip uninstall --quiet --yes pip

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="symphony-nodesched" \
      org.opencontainers.image.description="Symphony nodesched: node scheduler (K,V tier manager, engine adapter: sim or a vLLM sidecar)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="Symphony" \
      org.opencontainers.image.documentation="docs/kubernetes.md"
# A fixed numeric non-root user, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
RUN echo 'symphony:x:10001:10001:symphony:/nonexistent:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'symphony:x:10001:' >> /etc/group
COPY --from=build /opt/venv /opt/venv
# The project's KV connector for the vLLM sidecar (dependency-free; the chart's init container
# copies it onto the sidecar's PYTHONPATH).
COPY --from=build /opt/symphony-plugins /opt/symphony-plugins
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /tmp
EXPOSE 50061 9100
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9100/healthz', timeout=2)"]
ENTRYPOINT ["symphony-nodesched"]
CMD ["--help"]
