# The connector image: one worker per container; scale with `docker compose up --scale worker=N`.
FROM python:3.11-slim
RUN pip install --no-cache-dir uv
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY connector ./connector
COPY topics ./topics
RUN uv sync --frozen --no-dev && useradd --create-home connector && chown -R connector /app
USER connector
ENV PATH="/app/.venv/bin:$PATH" CONNECTOR_DATA_DIR=/app/state CONNECTOR_WEB_HOST=0.0.0.0
EXPOSE 6066
CMD ["connector", "worker"]
