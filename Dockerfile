# syntax=docker/dockerfile:1
# conversation-archiver: `archiver run` by default; `migrate`, `sweep`, `status`, `check`, ...
# as arguments. Build: docker build -t conversation-archiver .

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: install the locked dependencies, then the project, into a virtualenv ----------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/archiver
WORKDIR /src
# The exact, hashed versions of requirements.lock (refreshed by `make lock`), build backend
# included, so that nothing is resolved at build time.
COPY requirements.lock ./
RUN /opt/archiver/bin/pip install --require-hashes --no-deps -r requirements.lock
# Only what the wheel needs (pyproject.toml names README.md; sql/ is force-included).
COPY pyproject.toml README.md ./
COPY consumer ./consumer
COPY sql ./sql
RUN /opt/archiver/bin/pip install --no-deps --no-build-isolation . \
 && /opt/archiver/bin/pip check \
 && /opt/archiver/bin/archiver --version

# --- runtime: the virtualenv only, run by an unprivileged user ----------------------------
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/archiver/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ARCHIVER_HEALTH_FILE=/run/archiver/health.json \
    ARCHIVER_LOG_FORMAT=json
RUN groupadd --system --gid 10001 archiver \
 && useradd --system --uid 10001 --gid archiver --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin archiver \
 && install -d -o archiver -g archiver -m 0755 /run/archiver
COPY --from=build /opt/archiver /opt/archiver
USER 10001:10001
WORKDIR /run/archiver
# /healthz, /readyz, /metrics (ARCHIVER_HTTP_PORT)
EXPOSE 9108
# `archiver check` reads the health file that `run` rewrites every 10 s: exit 1 when it is
# older than 35 s or says "unhealthy", which includes PostgreSQL or Redis being unreachable.
# That is an outage a restart does not fix: do not restart on it. One-shot commands
# (migrate, sweep) should disable it.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["archiver", "check"]
ENTRYPOINT ["archiver"]
CMD ["run"]
