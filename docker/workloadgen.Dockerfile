# syntax=docker/dockerfile:1
# Symphony workloadgen: multi-turn workload generator (ShareGPT or synthetic users, advisories, reports)
# Build from the repository root: docker build -f docker/workloadgen.Dockerfile -t symphony-workloadgen .
# Dependencies are pinned by requirements/lock.txt; only the [workloadgen] extra is installed.
ARG PYTHON_IMAGE=docker.io/library/python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# Dependencies first, pinned by the lock file: this layer stays cached while the sources change.
COPY pyproject.toml README.md docker/extra_requirements.py ./
COPY requirements/ requirements/
RUN python3 -m venv /opt/venv \
 && python3 extra_requirements.py workloadgen > /tmp/requirements.txt \
 && /opt/venv/bin/pip install --quiet -c requirements/lock.txt -r /tmp/requirements.txt
# Then the project; its package spans several folders (see pyproject.toml's hatch wheel packages).
COPY proto/ proto/
COPY services/ services/
RUN /opt/venv/bin/pip install --quiet --no-deps . \
 && /opt/venv/bin/pip check \
 && /opt/venv/bin/pip uninstall --quiet --yes pip

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="symphony-workloadgen" \
      org.opencontainers.image.description="Symphony workloadgen: multi-turn workload generator (ShareGPT or synthetic users, advisories, reports)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="Symphony" \
      org.opencontainers.image.documentation="docs/kubernetes.md"
# A fixed numeric non-root user, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
RUN echo 'symphony:x:10001:10001:symphony:/nonexistent:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'symphony:x:10001:' >> /etc/group
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /tmp
# matplotlib wants a writable config dir; /tmp is an emptyDir under a read-only root filesystem.
ENV MPLCONFIGDIR=/tmp/matplotlib
EXPOSE 50050
# A batch client has no server to probe: healthy means its entry point imports and runs.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["symphony-workloadgen", "--help"]
ENTRYPOINT ["symphony-workloadgen"]
CMD ["--help"]
