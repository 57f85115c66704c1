# The connector image: one worker (or the sandbox) per container.
# Scale with `docker compose up --scale worker=N`; see docker-compose.yml.
# The base is a build argument so that machines with no registry can build on a base made
# from Debian's packages (scripts/containers); everyone else keeps the official image.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# Pinned, like the Python dependencies (uv.lock): the same build every time.
ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir "uv==${UV_VERSION}" \
    && useradd --create-home --uid 10001 connector \
    && mkdir -p /app/state \
    && chown -R connector /app
WORKDIR /app
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_NO_CACHE=1 UV_PYTHON_DOWNLOADS=never

# Dependencies first, from the lock file alone: this layer is reused until
# pyproject.toml or uv.lock change, whatever happens to the code.
COPY --chown=connector pyproject.toml uv.lock ./
USER connector
RUN uv sync --frozen --no-dev --extra otel --no-install-project

# Then the project itself (cheap: its dependencies are already installed).
COPY --chown=connector README.md ./
COPY --chown=connector connector ./connector
COPY --chown=connector topics ./topics
RUN uv sync --frozen --no-dev --extra otel

# /app/state exists and belongs to the worker, so a named volume mounted there starts
# with that owner (Docker copies it into a new volume).
ENV PATH="/app/.venv/bin:$PATH" CONNECTOR_DATA_DIR=/app/state CONNECTOR_WEB_HOST=0.0.0.0
EXPOSE 6066
CMD ["python", "-m", "connector.slots", "connector", "worker"]
