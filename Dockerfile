# One image, one process: the admin API and the LiveKit worker (`python -m app start`).
# No `# syntax=` line: the daemon's built-in Dockerfile frontend handles everything here
# (RUN --mount included), and naming one makes BuildKit pull it from Docker Hub.
#
#   docker build -t voice-platform .
#   docker build --build-arg PYTHON_IMAGE=registry.local/python:3.11-slim-bookworm .
#
# The runtime is what tests/deploy/test_runtime.py reproduces without Docker: a
# `uv sync --frozen --no-dev` venv, the app/ and prompts/ trees, the ENV below.

# Any python:3.11 image (the official one or a local mirror/derivative of it). The builder
# and runtime stages use the same one: the venv links to that image's interpreter.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG NODE_IMAGE=node:22-slim

# ---------------------------------------------------------------- python dependencies
FROM ${PYTHON_IMAGE} AS builder

# uv from PyPI (the astral.sh installer is not always reachable from build hosts).
ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir "uv==${UV_VERSION}"

ENV UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=3.11
WORKDIR /app

# The lock first, alone: this layer (~570 MB of wheels) is rebuilt only when it changes.
# `--no-dev` keeps the test-only servers and tools (SecantusDB, pytest, hadolint,
# playwright...) out of the image: they live in the `dev` dependency group.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --compile-bytecode --no-install-project

# Model files: nothing to download. `python -m livekit.agents download-files` calls each
# plugin's `download_files()`, and neither plugin we ship overrides the no-op default
# (livekit-plugins-silero carries silero_vad.onnx inside its wheel; livekit-plugins-openai
# only talks to an API). Instead, prove at build time that the VAD model loads offline.
RUN /app/.venv/bin/python -c "from livekit.plugins import silero; silero.VAD.load()"

# ---------------------------------------------------------------- browser assets
# The console's `livekit-client` and `uplot`, and the /schema viewer's `swagger-ui-dist`, from npm at
# build time: the runtime's code tree is read-only, so it must not fetch them itself
# (app/assets/browser.py uses node_modules when it holds the locked versions). `npm ci`
# installs exactly app/console/package-lock.json (node 22: one of its dependencies
# declares `engines: node >=22.22`); --ignore-scripts: swagger-ui-dist's dependency
# @scarf/scarf would report the install to its analytics service.
FROM ${NODE_IMAGE} AS console
WORKDIR /console
COPY app/console/package.json app/console/package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

# A fixed non-root uid/gid, so a volume's ownership is predictable across deploys.
ARG APP_UID=10001
RUN groupadd --system --gid "${APP_UID}" app \
 && useradd --system --uid "${APP_UID}" --gid app --create-home --home-dir /home/app \
        --shell /usr/sbin/nologin app \
 && mkdir -p /data \
 && chown app:app /data

WORKDIR /app
# The venv and the code stay root-owned: the app user can read, not rewrite, them.
COPY --from=builder /app/.venv /app/.venv
COPY prompts/ ./prompts/
COPY app/ ./app/
# Only what is served (app/assets/browser.py): each package's package.json (its version
# is checked against the lock) and its self-contained browser files; the rest of
# node_modules stays in the build stage.
COPY --from=console /console/node_modules/livekit-client/package.json ./app/console/node_modules/livekit-client/
COPY --from=console /console/node_modules/livekit-client/dist ./app/console/node_modules/livekit-client/dist
COPY --from=console /console/node_modules/swagger-ui-dist/package.json \
     /console/node_modules/swagger-ui-dist/swagger-ui-bundle.js \
     /console/node_modules/swagger-ui-dist/swagger-ui.css \
     /console/node_modules/swagger-ui-dist/favicon-32x32.png \
     ./app/console/node_modules/swagger-ui-dist/
COPY --from=console /console/node_modules/uplot/package.json ./app/console/node_modules/uplot/
COPY --from=console /console/node_modules/uplot/dist ./app/console/node_modules/uplot/dist
RUN /app/.venv/bin/python -m compileall -q app

# DATABASE_URL: SQLite on /data, the volume fly.toml mounts ([[mounts]]); set a
# mongodb:// URL (fly secrets) to share one store between machines.
# PYTHONPATH: `python -m app seed|chat` works from any directory (`fly ssh console -C`).
ENV PATH="/app/.venv/bin:${PATH}" \
    VIRTUAL_ENV=/app/.venv \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DATABASE_URL=sqlite+aiosqlite:////data/app.db \
    HOST=0.0.0.0 \
    PORT=8000

USER ${APP_UID}:${APP_UID}
EXPOSE 8000

# /healthz is liveness only (the event loop answers); slim has no curl, Python does.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)"]

# The supervisor drains on SIGTERM (refuse new jobs, let calls finish, say goodbye to the
# rest): `docker stop -t 300` / fly's kill_timeout must cover DRAIN_TIMEOUT plus the
# goodbye/flush budget (app/worker/drain.py: shutdown_budget).
STOPSIGNAL SIGTERM
CMD ["python", "-m", "app", "start"]
