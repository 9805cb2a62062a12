#!/usr/bin/env bash
# Smoke test of the Docker deployment: builds the image, starts docker-compose.yml under a unique project name,
# waits for the gateway to be healthy, calls it through the published port with the demo token, and always
# removes what it started (containers, network, volumes; the image stays, as a build cache for the next run).
#
#   bash scripts/docker-smoke.sh
#
# Needs docker and docker-compose (1.29 or later) against a running engine, and curl or node on the host.
# Settings: GATEWAY_PORT (default 3000), SMOKE_WAIT_S (default 120), GATEWAY_IMAGE (default wechatpay-gateway:local),
# SMOKE_HTTP=node to make the HTTP calls with node instead of curl.
set -euo pipefail

cd "$(dirname "$0")/.."

GATEWAY_PORT=${GATEWAY_PORT:-3000}
export GATEWAY_PUBLISH="127.0.0.1:$GATEWAY_PORT:3000"
export GATEWAY_IMAGE=${GATEWAY_IMAGE:-wechatpay-gateway:local}
export REDIS_URL=
WAIT_S=${SMOKE_WAIT_S:-120}
PROJECT="wpgw-smoke-$$-$RANDOM"
TOKEN=demo-token-change-me-0123456789
BASE="http://127.0.0.1:$GATEWAY_PORT"
START=$SECONDS

compose() { docker-compose -p "$PROJECT" -f docker-compose.yml "$@"; }
log() { printf '[docker-smoke %3ds] %s\n' "$((SECONDS - START))" "$*"; }

# http METHOD PATH [JSON_BODY]: prints the status code, then the response headers, to stdout.
if [ "${SMOKE_HTTP:-curl}" = curl ] && command -v curl >/dev/null 2>&1; then
  http() {
    local args=(-sS -o /dev/null -D - -w '%{http_code}\n' -X "$1" --max-time 15 -H "Authorization: Bearer $TOKEN")
    if [ $# -ge 3 ]; then args+=(-H 'Content-Type: application/json' --data "$3"); fi
    curl "${args[@]}" "$BASE$2" | tr -d '\r' | awk '{ lines[NR] = $0 } END { print lines[NR]; for (i = 1; i < NR; i++) print lines[i] }'
  }
else
  http() {
    node -e '
      const [method, url, body] = process.argv.slice(1)
      const headers = { authorization: "Bearer " + process.env.TOKEN }
      if (body !== undefined) headers["content-type"] = "application/json"
      fetch(url, { method, headers, body, signal: AbortSignal.timeout(15000) }).then(async r => {
        await r.arrayBuffer()
        console.log(r.status)
        for (const [k, v] of r.headers) console.log(k + ": " + v)
      }, e => { console.log("000"); console.error(e.message) })' "$1" "$BASE$2" ${3+"$3"}
  }
  export TOKEN
fi

failed=0
cleanup() {
  local rc=$?
  if [ "$rc" -ne 0 ] || [ "$failed" -ne 0 ]; then
    log "FAILED; container states and logs follow"
    compose ps || true
    compose logs --no-color --tail=200 wechatpay-sandbox gateway || true
  fi
  log "removing project $PROJECT"
  compose down -v --remove-orphans --timeout 10 >/dev/null 2>&1 || compose down -v --remove-orphans || true
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() { failed=1; log "FAIL: $*"; exit 1; }

# check NAME EXPECTED_STATUS METHOD PATH [BODY] [REQUIRED_HEADER...]
check() {
  local name=$1 want=$2 method=$3 path=$4 body=${5-} out status h
  if [ -n "$body" ]; then out=$(http "$method" "$path" "$body"); else out=$(http "$method" "$path"); fi
  status=$(head -n1 <<<"$out")
  [ "$status" = "$want" ] || fail "$name: $method $path answered $status, expected $want"$'\n'"$out"
  shift 5 2>/dev/null || shift $#
  for h in "$@"; do
    grep -qi "^$h:" <<<"$out" || fail "$name: $method $path answered without a $h header"$'\n'"$out"
  done
  log "ok   $name: $method $path -> $status"
}

log "building $GATEWAY_IMAGE"
compose build gateway

log "starting project $PROJECT (gateway on port $GATEWAY_PORT)"
compose up -d --no-build

log "waiting up to ${WAIT_S}s for the gateway to be healthy"
cid=$(compose ps -q gateway)
[ -n "$cid" ] || fail "no gateway container"
state=
deadline=$((SECONDS + WAIT_S))
while [ "$SECONDS" -lt "$deadline" ]; do
  state=$(docker inspect -f '{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{else}}no-healthcheck{{end}}' "$cid" 2>/dev/null || echo missing)
  case "$state" in
    running/healthy) break ;;
    exited/* | dead/* | missing) fail "gateway container is $state" ;;
  esac
  sleep 2
done
[ "$state" = running/healthy ] || fail "gateway not healthy after ${WAIT_S}s (last state: $state)"
log "gateway is healthy"

check healthz 200 GET /healthz
check openapi 200 GET /docs/json
check pay 204 POST /payscore/partner/serviceorder/1234323JKHDFE1243252/pay \
  '{"service_id":"2002000000000558128851361561536","sub_mchid":"1900000109"}' x-request-id wechatpay-request-id
check fail-notify 204 POST /contracts/123124412412423431/fail-notify '{}'
check notify 204 POST /partner/contracts/123124412412423431/notify \
  '{"sub_mchid":"12345512","estimated_amount":{"amount":1}}'
check upstream-fault 502 POST /payscore/partner/serviceorder/SANDBOX_SYSTEM_ERROR/pay \
  '{"service_id":"2002000000000558128851361561536","sub_mchid":"1900000109"}'

# The image itself: uid 1000, tini as PID 1, production mode, no dev dependencies, code not writable.
facts=$(docker exec "$cid" sh -c 'echo "uid=$(id -u) pid1=$(tr "\0" " " </proc/1/cmdline | sed "s/ $//") NODE_ENV=$NODE_ENV"
  for d in typescript tap @types/node; do [ ! -e "node_modules/$d" ] || echo "dev-dependency:$d"; done
  touch dist/server.js 2>/dev/null && echo "dist-writable" || true')
log "image: $(head -n1 <<<"$facts")"
grep -q '^uid=1000 pid1=/usr/bin/tini -- node dist/server.js NODE_ENV=production$' <<<"$facts" || fail "unexpected process setup: $facts"
[ "$(wc -l <<<"$facts")" -eq 1 ] || fail "image problems: $(tail -n +2 <<<"$facts" | tr '\n' ' ')"
log "ok   image: runs as node under tini, production, no dev dependencies, read-only code"

# Graceful stop: SIGTERM through tini, exit code 0, well within Docker's 10 s stop timeout.
t0=$SECONDS
compose stop -t 10 gateway >/dev/null 2>&1
code=$(docker inspect -f '{{.State.ExitCode}}' "$cid")
[ "$code" = 0 ] || fail "gateway exited with code $code on SIGTERM"
[ $((SECONDS - t0)) -lt 9 ] || fail "gateway took $((SECONDS - t0))s to stop"
log "ok   graceful stop: exit code 0 in $((SECONDS - t0))s"

log "PASS in $((SECONDS - START))s"
