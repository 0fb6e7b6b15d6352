# Placeholder: the deploy issue fills this in (multi-stage, uv sync --frozen --no-dev,
# non-root user, /data volume, HEALTHCHECK on /healthz, CMD python -m app start).
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}
WORKDIR /app
COPY . .
RUN pip install --no-cache-dir uv && uv sync --frozen --no-dev
ENV DATABASE_URL=sqlite+aiosqlite:////data/app.db PORT=8000
EXPOSE 8000
CMD ["uv", "run", "--no-dev", "python", "-m", "app", "start"]
