#!/usr/bin/env bash
# The README's promise, checked on a machine that has nothing but Python and uv: a
# Debian bookworm container with python3 and uv (from PyPI) — no Node, npm, Chromium,
# PostgreSQL or git — gets a copy of this repository's HEAD in /root (0700, like a clone
# in a home directory) and runs the two README commands as written:
#
#   uv run python -m app dev   -> API, the console's Talk assets and the /schema viewer
#   uv run pytest              -> passes with no test skipped
#
# and prints how long each took. Slow (a cold uv cache, the whole suite): run it by hand
# when changing what the set-up needs.
#
#   sudo bash tests/deploy/fresh_machine_check.sh
#
# The container uses the host's network (the daemon runs without a bridge) and gets
# CAP_LINUX_IMMUTABLE, which root has on a real machine (a store-outage test freezes a
# SQLite file with `chattr +i`). Needs a Docker daemon; on a Debian host without one,
# docker.io and debootstrap are installed and dockerd is started (vfs, no bridge).
set -euo pipefail

REPO=${REPO:-$(git -C "$(dirname "$0")" rev-parse --show-toplevel)}
WORK=${WORK:-${TMPDIR:-/tmp}/vp-fresh-machine}
OUT=${OUT:-${TMPDIR:-/tmp}/vp-fresh-machine-out}
IMAGE=${IMAGE:-local/python-uv:bookworm}
PORT=${PORT:-18517}
DOCKER=${DOCKER:-$( [[ -x /usr/bin/docker ]] && echo /usr/bin/docker || command -v docker || echo docker)}
STARTED_DAEMON=
mkdir -p "$OUT"

log() { printf '\n=== [%s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
cleanup() {
    set +e
    $DOCKER rm -f vp-fresh-machine >/dev/null 2>&1
    if [[ -n $STARTED_DAEMON ]]; then
        kill -TERM "$STARTED_DAEMON" 2>/dev/null
        for _ in $(seq 1 30); do kill -0 "$STARTED_DAEMON" 2>/dev/null || break; sleep 1; done
    fi
}
trap cleanup EXIT

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
fi

log "base image: Debian bookworm (debootstrap), python3, uv from PyPI"
if ! $DOCKER image inspect local/debian:bookworm >/dev/null 2>&1; then
    command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends debootstrap >/dev/null
    R=$(mktemp -d /tmp/rootfs-bookworm.XXXXXX)
    chmod 0755 "$R"
    debootstrap --variant=minbase bookworm "$R" http://deb.debian.org/debian >"$OUT/debootstrap.log" 2>&1 \
        || { tail -20 "$OUT/debootstrap.log"; exit 1; }
    printf '%s\n' 'deb http://deb.debian.org/debian bookworm main' \
        'deb http://deb.debian.org/debian-security bookworm-security main' >"$R/etc/apt/sources.list"
    rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/lib/apt/lists/*
    tar --numeric-owner -C "$R" -c . | $DOCKER import --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' \
        - local/debian:bookworm >/dev/null
    rm -rf "$R"
fi
B=$OUT/image
mkdir -p "$B/extra-ca"
rm -f "$B/extra-ca/"*; touch "$B/extra-ca/.keep"
cp /usr/local/share/ca-certificates/*.crt "$B/extra-ca/" 2>/dev/null || true  # a TLS-intercepting proxy's CA
cat >"$B/Dockerfile" <<'EOF'
FROM local/debian:bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-pip ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY extra-ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt UV_SYSTEM_CERTS=1 LANG=C.UTF-8
RUN pip install --no-cache-dir --break-system-packages uv
EOF
DOCKER_BUILDKIT=1 $DOCKER build -q --network host -t "$IMAGE" "$B" >/dev/null

log "copy of $REPO (HEAD)"
rm -rf "$WORK"
git clone -q "$REPO" "$WORK/voice-platform"
git -C "$WORK/voice-platform" log --oneline -1
rm -rf "$WORK/voice-platform/.git"  # the container has no git either

cat >"$WORK/run.sh" <<'EOF'
set -euo pipefail
cd /root/voice-platform
echo "python3: $(python3 --version 2>&1); uv: $(uv --version)"
for tool in node npm chromium initdb psql git docker; do
    if command -v "$tool" >/dev/null; then echo "unexpected: $tool is installed"; exit 1; fi
done
echo "absent: node npm chromium initdb psql git docker"
get() { python3 - "$@" <<'PY'
import sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
        body = r.read().decode(errors="replace")
        print(r.status, len(body))
        if len(sys.argv) > 2:
            print(body)
except urllib.error.HTTPError as e:
    print(e.code, 0)
except OSError as e:
    print("000", e)
PY
}
B=http://127.0.0.1:$PORT

echo "--- uv run python -m app dev"
t0=$(date +%s.%N)
uv run python -m app dev >/root/dev.log 2>&1 &
DEV=$!
until [[ $(get "$B/healthz" | cut -d' ' -f1) == 200 ]]; do
    kill -0 $DEV 2>/dev/null || { cat /root/dev.log; exit 1; }
    sleep 0.5
done
t_api=$(date +%s.%N)
until get "$B/talk" body | grep -q 'data-livekit-client="ready"'; do
    get "$B/talk" body | grep -q 'data-livekit-client="missing"' && { get "$B/talk" body | grep -o 'data-livekit-client-detail="[^"]*"'; exit 1; }
    sleep 0.5
done
t_assets=$(date +%s.%N)
fail=0
expect() { if [[ $2 == "$3" ]]; then echo "PASS  $1"; else echo "FAIL  $1: expected $2, got $3"; fail=1; fi; }
expect "/healthz" 200 "$(get "$B/healthz" | cut -d' ' -f1)"
expect "/readyz (worker disabled without LiveKit)" 200 "$(get "$B/readyz" | cut -d' ' -f1)"
expect "/agents (console)" 200 "$(get "$B/agents" | cut -d' ' -f1)"
expect "Talk: LiveKit client ready" 1 "$(get "$B/talk" body | grep -c 'data-livekit-client="ready"')"
expect "livekit-client ESM bundle" 200 "$(get "$B/console/vendor/livekit-client/livekit-client.esm.mjs" | cut -d' ' -f1)"
expect "/schema links the self-hosted viewer" 1 "$(get "$B/schema" body | grep -c 'src="/schema/assets/swagger-ui-bundle.js"')"
expect "/schema/assets/swagger-ui-bundle.js" 200 "$(get "$B/schema/assets/swagger-ui-bundle.js" | cut -d' ' -f1)"
expect "/schema/assets/swagger-ui.css" 200 "$(get "$B/schema/assets/swagger-ui.css" | cut -d' ' -f1)"
expect "/schema/openapi.json" 200 "$(get "$B/schema/openapi.json" | cut -d' ' -f1)"
kill -TERM $DEV; wait $DEV || true
printf 'dev: API answered after %.1f s, console + /schema assets after %.1f s (first run: uv sync and npm fetches included)\n' \
    "$(python3 -c "print($t_api - $t0)")" "$(python3 -c "print($t_assets - $t0)")"
[[ $fail == 0 ]] || { tail -40 /root/dev.log; exit 1; }

echo "--- uv run pytest"
t0=$(date +%s)
set +e
uv run pytest -p no:cacheprovider >/root/pytest.log 2>&1
rc=$?
set -e
echo "pytest exit $rc in $(( $(date +%s) - t0 )) s"
grep -E "^(SKIPPED|FAILED|ERROR)" /root/pytest.log | head -40 || true
tail -3 /root/pytest.log
cp /root/pytest.log /root/dev.log /out/ 2>/dev/null || true
[[ $rc == 0 ]] && ! tail -1 /root/pytest.log | grep -q skipped
EOF

log "run the README's two commands in the container"
$DOCKER rm -f vp-fresh-machine >/dev/null 2>&1 || true
$DOCKER run --name vp-fresh-machine --network host --cap-add LINUX_IMMUTABLE -e PORT="$PORT" \
    -v "$WORK/voice-platform:/root/voice-platform" -v "$WORK/run.sh:/root/run.sh:ro" -v "$OUT:/out" \
    "$IMAGE" bash /root/run.sh
echo "logs: $OUT/dev.log, $OUT/pytest.log"
