#!/usr/bin/env bash
# compose-check.sh: run deploy/compose.yaml (Redis, three dashcast instances, nginx) on a Docker host
# that reaches no container registry, recreate the busiest instance under load, and check that HTTP
# and WebSocket clients through nginx are served again within a few seconds (deploy/check/reconnect.ts).
# Run from the project root, as root, after the image check has left a Docker engine, the stand-in
# base images and the Debian minbase tarball (.ci/run does both, in that order):
#
#   bash .ci/verify-image.sh
#   bash deploy/check/compose-check.sh
#
# compose.yaml's redis:7-alpine and nginx:1.27-alpine are replaced by stand-ins built here from
# Debian bookworm packages, under the same tags, only when no image of that tag exists (a machine
# that can pull keeps the real ones). They are close, not equal, to the real images: Redis 7.0 for
# 7.x, and nginx 1.22 for 1.27; nginx.conf uses nothing newer than 1.22 for that reason.
# One line per check ("ok", "FAIL", "info"); exit status 1 when a check fails. Leaves the images,
# removes its containers, volumes and network. Settings: CHECK_PORT (18091), CHECK_PROJECT
# (dashcast-check), VERIFY_STATE (/var/tmp/dashcast-verify), REBUILD_STANDINS=1, CHECK_NGINX_CONF
# (another nginx.conf to run instead of deploy/nginx.conf, e.g. an old one).
set -uo pipefail
cd "$(dirname "$0")/../.."

PORT=${CHECK_PORT:-18091}
PROJECT=${CHECK_PROJECT:-dashcast-check}
STATE=${VERIFY_STATE:-/var/tmp/dashcast-verify}
REBUILD_STANDINS=${REBUILD_STANDINS:-0}
CODENAME=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
MINBASE_TAR=$STATE/$CODENAME-minbase.tar     # debootstrap --variant=minbase, left by verify-image.sh
MINBASE_TAG=dashcast-standin/$CODENAME-minbase
REDIS_TAG=redis:7-alpine
NGINX_TAG=nginx:1.27-alpine
T0=$(date +%s)

failures=0
ok()   { printf 'ok   %s\n' "$*"; }
info() { printf 'info %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*"; failures=$((failures + 1)); }
die()  { printf 'FAIL %s\n' "$*"; exit 1; }
since() { echo $(( $(date +%s) - $1 )); }

[ "$(id -u)" = 0 ] || die "setup: run as root (reads /proc of the containers, may install docker-compose)"
docker info >/dev/null 2>&1 || die "setup: no Docker engine answers: run verify-image.sh first (it starts one)"
[ -x node_modules/.bin/bun ] || die "setup: node_modules/.bin/bun is missing: run npm ci first"
mkdir -p "$STATE"
# Without buildx the docker CLI cannot use BuildKit: the classic builder, as verify-image.sh does.
export DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-$(docker buildx version >/dev/null 2>&1 && echo 1 || echo 0)}

# Compose v2 when the docker CLI has it, else the Python docker-compose (Debian 12 has 1.29).
if docker compose version >/dev/null 2>&1; then
  compose_bin=(docker compose)
else
  if ! command -v docker-compose >/dev/null; then
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker-compose; } \
      >"$STATE/apt-compose.log" 2>&1 || die "setup: apt-get install docker-compose (see $STATE/apt-compose.log)"
    info "installed docker-compose"
  fi
  compose_bin=(docker-compose)
fi
ok "compose: $("${compose_bin[@]}" version 2>/dev/null | head -1)"

# ---------------------------------------------------------------------------------------------
# Stand-ins for the images compose.yaml pulls
# ---------------------------------------------------------------------------------------------
build_args=(--network host)   # apt reaches the mirror the way this machine does
for v in HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
  [ -n "${!v:-}" ] && build_args+=(--build-arg "$v=${!v}")
done
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

ensure_minbase_image() {
  have_image "$MINBASE_TAG" && [ "$REBUILD_STANDINS" != 1 ] && return
  [ -s "$MINBASE_TAR" ] || die "stand-ins: no $MINBASE_TAR: run verify-image.sh first (it makes it)"
  docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$MINBASE_TAR" "$MINBASE_TAG" >/dev/null || die "stand-ins: docker import $MINBASE_TAR"
}

# $1 tag, $2 name for the log, stdin: the Dockerfile
build_standin() {
  local t
  t=$(date +%s)
  docker build "${build_args[@]}" -t "$1" - >"$STATE/standin-$2.log" 2>&1 || {
    tail -15 "$STATE/standin-$2.log" | sed 's/^/     | /'
    die "stand-ins: docker build $1 (see $STATE/standin-$2.log)"
  }
  info "built stand-in $1 from Debian packages ($(since "$t") s)"
}

if [ "$REBUILD_STANDINS" = 1 ] || ! have_image "$REDIS_TAG"; then
  ensure_minbase_image
  # Like the official image: redis-server and redis-cli on PATH, user redis, /data, and protected
  # mode off by default (the official build patches that default; clients come from other containers).
  build_standin "$REDIS_TAG" redis <<EOF
FROM $MINBASE_TAG
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* && mkdir /data && chown redis:redis /data \
 && printf '%s\n' '#!/bin/sh' 'set -e' \
      'case "\$1" in -*|*.conf) set -- redis-server "\$@" ;; esac' \
      'if [ "\$1" = redis-server ]; then shift; set -- redis-server --protected-mode no "\$@"; fi' \
      'exec "\$@"' >/usr/local/bin/docker-entrypoint.sh \
 && chmod 755 /usr/local/bin/docker-entrypoint.sh
LABEL dashcast.standin="Debian $CODENAME redis-server, standing in for $REDIS_TAG"
WORKDIR /data
USER redis
EXPOSE 6379
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
EOF
fi

if [ "$REBUILD_STANDINS" = 1 ] || ! have_image "$NGINX_TAG"; then
  ensure_minbase_image
  # Like the official image: logs to the container's stdout/stderr, foreground, SIGQUIT for a
  # graceful stop, and wget for compose.yaml's healthcheck (busybox has it in the alpine image).
  build_standin "$NGINX_TAG" nginx <<EOF
FROM $MINBASE_TAG
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nginx wget \
 && rm -rf /var/lib/apt/lists/* \
 && ln -sf /dev/stdout /var/log/nginx/access.log && ln -sf /dev/stderr /var/log/nginx/error.log
LABEL dashcast.standin="Debian $CODENAME nginx, standing in for $NGINX_TAG"
EXPOSE 80
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
EOF
fi
for tag in "$REDIS_TAG" "$NGINX_TAG"; do
  label=$(docker image inspect -f '{{index .Config.Labels "dashcast.standin"}}' "$tag" 2>/dev/null)
  [ -n "$label" ] && info "$tag is a stand-in: $label"
done

# ---------------------------------------------------------------------------------------------
# nginx.conf and the dashcast image
# ---------------------------------------------------------------------------------------------
NGINX_CONF=${CHECK_NGINX_CONF:-deploy/nginx.conf}
NGINX_CONF=$(realpath "$NGINX_CONF")
if out=$(docker run --rm --network none -v "$NGINX_CONF:/etc/nginx/nginx.conf:ro" "$NGINX_TAG" nginx -t 2>&1); then
  ok "nginx -t on $NGINX_TAG ($(docker run --rm --network none "$NGINX_TAG" nginx -v 2>&1 | sed 's/.*: //')): $(echo "$out" | tail -1 | sed 's/^nginx: //')"
else
  # Not fatal: an upstream block with fixed names is refused here but starts inside compose.
  fail "nginx -t on $NGINX_TAG outside compose: $(echo "$out" | grep -m1 -E 'emerg|error' | sed 's/^.*\] //')"
fi

# compose.yaml builds dashcast:local from the Dockerfile; its build would not reach the npm
# registry from a container here (no forwarding), so build that tag with the host's network.
t=$(date +%s)
docker build "${build_args[@]}" -t dashcast:local . >"$STATE/build-compose.log" 2>&1 || {
  tail -15 "$STATE/build-compose.log" | sed 's/^/     | /'
  die "docker build -t dashcast:local (see $STATE/build-compose.log)"
}
ok "docker build -t dashcast:local ($(since "$t") s)"

# ---------------------------------------------------------------------------------------------
# The stack, and the scenario
# ---------------------------------------------------------------------------------------------
compose_dir=deploy
if [ "$NGINX_CONF" != "$(realpath deploy/nginx.conf)" ]; then
  # compose.yaml mounts ./nginx.conf: run a copy of the deploy folder with the other file in it.
  compose_dir=$STATE/compose-check && rm -rf "$compose_dir" && mkdir -p "$compose_dir"
  cp deploy/compose.yaml "$compose_dir/" && cp "$NGINX_CONF" "$compose_dir/nginx.conf"
  info "running with $CHECK_NGINX_CONF instead of deploy/nginx.conf"
fi
compose=("${compose_bin[@]}" -p "$PROJECT" -f "$compose_dir/compose.yaml")
# The simulated feed (no upstream here), an update every 2 s so that clients see traffic; nginx on
# loopback only; the other settings unset, whatever this shell has.
cenv=(env -u ADMIN_TOKEN -u COINGECKO_API_KEY -u LEASE_TTL -u COMPOSE_FILE -u COMPOSE_PROJECT_NAME
  DEMO=true UPDATE_INTERVAL="2 seconds" NGINX_PORT="127.0.0.1:$PORT")

cleanup() {
  "${cenv[@]}" "${compose[@]}" logs --no-color >"$STATE/compose-check.log" 2>&1
  docker rm -f "${PROJECT}_default-placeholder" >/dev/null 2>&1   # reconnect.ts's, if it died
  "${cenv[@]}" "${compose[@]}" down -v --remove-orphans -t 15 >"$STATE/compose-down.log" 2>&1 ||
    printf 'FAIL compose down (see %s)\n' "$STATE/compose-down.log"
}
docker rm -f "${PROJECT}_default-placeholder" >/dev/null 2>&1             # a run that was killed
"${cenv[@]}" "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1
trap cleanup EXIT

t=$(date +%s)
if "${cenv[@]}" "${compose[@]}" up -d --no-build >"$STATE/compose-up.log" 2>&1; then
  ok "compose up: redis, dashcast-1..3 healthy, nginx on 127.0.0.1:$PORT ($(since "$t") s)"
else
  tail -15 "$STATE/compose-up.log" | sed 's/^/     | /'
  die "compose up (see $STATE/compose-up.log)"
fi

# DEMO reaches the instances, and the settings without a value stay unset (not empty).
c1=$("${cenv[@]}" "${compose[@]}" ps -q dashcast-1)
envs=$(docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$c1")
if grep -qx 'DEMO=true' <<<"$envs" && ! grep -q '^ADMIN_TOKEN=' <<<"$envs"; then
  ok "DEMO passed through to the instances; unset settings stay unset"
else
  fail "instance environment: $(grep -E '^(DEMO|ADMIN_TOKEN|UPDATE_INTERVAL)=' <<<"$envs" | tr '\n' ' ')"
fi

"${cenv[@]}" node_modules/.bin/bun deploy/check/reconnect.ts "http://127.0.0.1:$PORT" -- "${compose[@]}" 2>&1 |
  tee "$STATE/reconnect.log"
rc=${PIPESTATUS[0]}
failed=$(grep -c '^FAIL' "$STATE/reconnect.log")
[ "$rc" = 0 ] || failures=$((failures + (failed > 0 ? failed : 1)))

# worker_rlimit_nofile must be granted, or worker_connections is bounded by a smaller limit.
limits=$("${cenv[@]}" "${compose[@]}" logs --no-color nginx 2>&1 | grep -E 'setrlimit|exceed open file resource limit' | head -2)
[ -z "$limits" ] && ok "nginx runs with its worker_rlimit_nofile (no setrlimit or file-limit warning)" ||
  fail "nginx file limit: $limits"

nginx_errors=$("${cenv[@]}" "${compose[@]}" logs --no-color nginx 2>&1 | grep -cE '\[(error|crit|alert|emerg)\]')
info "nginx logged $nginx_errors error lines (log $STATE/compose-check.log); total $(since "$T0") s"
if [ "$failures" -gt 0 ]; then
  "${cenv[@]}" "${compose[@]}" logs --no-color nginx 2>&1 | grep -E '\[(error|crit|alert|emerg)\]' | head -5 | sed 's/^/     | /'
  echo "FAILED: $failures check(s)"
  exit 1
fi
echo "PASSED"
