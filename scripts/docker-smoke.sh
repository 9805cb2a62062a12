#!/usr/bin/env bash
# Smoke test of the Docker deployment, in two phases, each under a unique project name, each always removed at the end
# (containers, network, volumes; the images stay, as a build cache for the next run):
#   1. docker-compose.yml: builds the image, waits for the gateway to be healthy, calls it through the published port
#      with the demo token, checks the image, and stops it with SIGTERM (drain included: exit code 0 within 20 s);
#   2. with docker-compose.replicas.yml (SMOKE_REPLICAS=0 skips it): 2 replicas, Redis and HAProxy; a call through
#      the load balancer, an Idempotency-Key replayed by the other replica, and calls that keep succeeding while one
#      replica stops.
#
#   bash scripts/docker-smoke.sh
#
# Needs docker and docker-compose (1.29 or later) against a running engine, and curl or node on the host.
# Settings: GATEWAY_PORT (default 3000), LB_PORT (default 3080), SMOKE_WAIT_S (default 120), SMOKE_REPLICAS (default 1),
# GATEWAY_IMAGE / REDIS_IMAGE / LB_IMAGE (defaults: wechatpay-gateway{,-redis,-lb}:local),
# SMOKE_HTTP=node to make the HTTP calls with node instead of curl.
set -euo pipefail

cd "$(dirname "$0")/.."

GATEWAY_PORT=${GATEWAY_PORT:-3000}
LB_PORT=${LB_PORT:-3080}
export GATEWAY_PUBLISH="127.0.0.1:$GATEWAY_PORT:3000"
export LB_PUBLISH="127.0.0.1:$LB_PORT:3000"
export GATEWAY_IMAGE=${GATEWAY_IMAGE:-wechatpay-gateway:local}
export REDIS_IMAGE=${REDIS_IMAGE:-wechatpay-gateway-redis:local}
export LB_IMAGE=${LB_IMAGE:-wechatpay-gateway-lb:local}
export REDIS_URL=
# Not from the caller's shell: which files and project each phase uses is this script's business.
unset COMPOSE_FILE COMPOSE_PROJECT_NAME
WAIT_S=${SMOKE_WAIT_S:-120}
REPLICAS=${SMOKE_REPLICAS:-1}
PROJECT="wpgw-smoke-$$-$RANDOM"
FILES=(-f docker-compose.yml)
TOKEN=demo-token-change-me-0123456789
BASE="http://127.0.0.1:$GATEWAY_PORT"
# Extra request header for http/check (e.g. an Idempotency-Key), empty for none.
HEADER=
START=$SECONDS
WORK=$(mktemp -d)
# The simulator remembers orders and collects each once (a second pay is 400 ORDER_DONE): one order per check.
pay_path() { echo "/payscore/partner/serviceorder/smoke-$1/pay"; }
PAY_PATH=$(pay_path 1)
PAY_BODY='{"service_id":"2002000000000558128851361561536","sub_mchid":"1900000109"}'
QUERY_PATH='/payscore/partner/serviceorder?service_id=2002000000000558128851361561536&out_order_no=smoke-1&sub_mchid=1900000109'
# The notices' 07:00-22:00 Beijing-time window would make the smoke test depend on the time of day.
export SANDBOX_NOTICE_WINDOW=off

compose() { docker-compose -p "$PROJECT" "${FILES[@]}" "$@"; }
log() { printf '[docker-smoke %3ds] %s\n' "$((SECONDS - START))" "$*"; }

# http METHOD PATH [JSON_BODY]: prints the status code, then the response headers, to stdout.
if [ "${SMOKE_HTTP:-curl}" = curl ] && command -v curl >/dev/null 2>&1; then
  http() {
    local args=(-sS -o /dev/null -D - -w '%{http_code}\n' -X "$1" --max-time 15 -H "Authorization: Bearer $TOKEN")
    if [ -n "$HEADER" ]; then args+=(-H "$HEADER"); fi
    if [ $# -ge 3 ]; then args+=(-H 'Content-Type: application/json' --data "$3"); fi
    curl "${args[@]}" "$BASE$2" | tr -d '\r' | awk '{ lines[NR] = $0 } END { print lines[NR]; for (i = 1; i < NR; i++) print lines[i] }'
  }
else
  http() {
    node -e '
      const [method, url, body] = process.argv.slice(1)
      const headers = { authorization: "Bearer " + process.env.TOKEN }
      const extra = process.env.HEADER
      if (extra) headers[extra.slice(0, extra.indexOf(":"))] = extra.slice(extra.indexOf(":") + 1).trim()
      if (body !== undefined) headers["content-type"] = "application/json"
      fetch(url, { method, headers, body, signal: AbortSignal.timeout(15000) }).then(async r => {
        await r.arrayBuffer()
        console.log(r.status)
        for (const [k, v] of r.headers) console.log(k + ": " + v)
      }, e => { console.log("000"); console.error(e.message) })' "$1" "$BASE$2" ${3+"$3"}
  }
  export TOKEN HEADER
fi

failed=0
LOOP_PID=
cleanup() {
  local rc=$?
  [ -z "$LOOP_PID" ] || kill "$LOOP_PID" 2>/dev/null || true
  if [ "$rc" -ne 0 ] || [ "$failed" -ne 0 ]; then
    log "FAILED; container states and logs follow"
    compose ps || true
    compose logs --no-color --tail=200 || true
  fi
  log "removing project $PROJECT"
  compose down -v --remove-orphans --timeout 25 >/dev/null 2>&1 || compose down -v --remove-orphans || true
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() { failed=1; log "FAIL: $*"; exit 1; }

# check NAME EXPECTED_STATUS METHOD PATH [BODY] [REQUIRED_HEADER or "HEADER: VALUE"...]
check() {
  local name=$1 want=$2 method=$3 path=$4 body=${5-} out status h
  if [ -n "$body" ]; then out=$(http "$method" "$path" "$body"); else out=$(http "$method" "$path"); fi
  status=$(head -n1 <<<"$out")
  [ "$status" = "$want" ] || fail "$name: $method $path answered $status, expected $want"$'\n'"$out"
  shift 5 2>/dev/null || shift $#
  for h in "$@"; do
    case "$h" in
      *:*) grep -qix "$h" <<<"$out" || fail "$name: $method $path answered without \`$h\`"$'\n'"$out" ;;
      *) grep -qi "^$h:" <<<"$out" || fail "$name: $method $path answered without a $h header"$'\n'"$out" ;;
    esac
  done
  log "ok   $name: $method $path -> $status"
}

log "building $GATEWAY_IMAGE"
compose build gateway

log "starting project $PROJECT (gateway on port $GATEWAY_PORT)"
compose up -d --no-build

# wait_healthy NAME CONTAINER_ID: until Docker's health check passes, at most WAIT_S.
wait_healthy() {
  local name=$1 cid=$2 state= deadline=$((SECONDS + WAIT_S))
  while [ "$SECONDS" -lt "$deadline" ]; do
    state=$(docker inspect -f '{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{else}}no-healthcheck{{end}}' "$cid" 2>/dev/null || echo missing)
    case "$state" in
      running/healthy) return 0 ;;
      exited/* | dead/* | missing) fail "$name container is $state" ;;
    esac
    sleep 2
  done
  fail "$name not healthy after ${WAIT_S}s (last state: $state)"
}

log "waiting up to ${WAIT_S}s for the gateway to be healthy"
cid=$(compose ps -q gateway)
[ -n "$cid" ] || fail "no gateway container"
wait_healthy gateway "$cid"
log "gateway is healthy"

check healthz 200 GET /healthz
check openapi 200 GET /docs/json
check pay 204 POST "$PAY_PATH" "$PAY_BODY" x-request-id wechatpay-request-id
check query 200 GET "$QUERY_PATH"
# The pay above was collected: the simulator notifies the gateway's listener (PAYSCORE.USER_PAID), which verifies it.
deadline=$((SECONDS + 20))
until docker logs "$cid" 2>/dev/null | grep '"msg":"notification"' | grep -q '"eventType":"PAYSCORE.USER_PAID"'; do
  [ "$SECONDS" -lt "$deadline" ] || fail "no PAYSCORE.USER_PAID notification in the gateway's log after 20s"$'\n'"$(docker logs "$cid" 2>&1 | tail -n 20)"
  sleep 1
done
log "ok   notification: the simulator's PAYSCORE.USER_PAID reached the gateway's listener and verified"
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

# Graceful stop: SIGTERM through tini, the drain delay (SHUTDOWN_DRAIN_DELAY_MS, 5 s) during which calls are still
# taken, then exit code 0, well within the 25 s that Compose gives (stop_grace_period) and the gateway's 20 s grace.
t0=$SECONDS
compose stop -t 25 gateway >/dev/null 2>&1
code=$(docker inspect -f '{{.State.ExitCode}}' "$cid")
[ "$code" = 0 ] || fail "gateway exited with code $code on SIGTERM"
[ $((SECONDS - t0)) -lt 20 ] || fail "gateway took $((SECONDS - t0))s to stop"
log "ok   graceful stop: exit code 0 in $((SECONDS - t0))s"

log "removing project $PROJECT"
compose down -v --remove-orphans --timeout 25 >/dev/null 2>&1
log "PASS docker-compose.yml"

if [ "$REPLICAS" = 0 ]; then
  log "PASS in $((SECONDS - START))s (SMOKE_REPLICAS=0: replicas not tested)"
  exit 0
fi

# ---- Phase 2: docker-compose.replicas.yml, 2 replicas behind HAProxy, sharing Redis -----------------------------
PROJECT="wpgw-smoke-$$-$RANDOM"
FILES=(-f docker-compose.yml -f docker-compose.replicas.yml)
export GATEWAY_PUBLISH=127.0.0.1::3000
BASE="http://127.0.0.1:$LB_PORT"

log "building $REDIS_IMAGE and $LB_IMAGE"
compose build redis lb

log "starting project $PROJECT (2 replicas, Redis, load balancer on port $LB_PORT)"
compose up -d --no-build --scale gateway=2

lb=$(compose ps -q lb)
[ -n "$lb" ] || fail "no lb container"
mapfile -t gateways < <(compose ps -q gateway)
[ "${#gateways[@]}" = 2 ] || fail "expected 2 gateway containers, found ${#gateways[@]}"

# HAProxy's view: how many replicas of its backend `ready` (health-checked on /readyz) are UP. This is the wait: it
# needs both replicas ready (Redis connected) and the load balancer running, and it is quicker than Docker's checks.
ready_in_lb() {
  docker exec "$lb" bash -c 'exec 3<>/dev/tcp/127.0.0.1/9999; echo "show stat" >&3; cat <&3' 2>/dev/null |
    awk -F, '$1 == "ready" && $2 ~ /^gw/ && $18 == "UP" && $37 == "L7OK"' | wc -l
}
log "waiting up to ${WAIT_S}s for HAProxy to see both replicas ready"
deadline=$((SECONDS + WAIT_S))
until [ "$(ready_in_lb)" = 2 ]; do
  for c in "$lb" "${gateways[@]}"; do
    state=$(docker inspect -f '{{.State.Status}}' "$c" 2>/dev/null || echo missing)
    [ "$state" = running ] || fail "container ${c:0:12} is $state"
  done
  [ "$SECONDS" -lt "$deadline" ] || fail "HAProxy does not see 2 ready replicas after ${WAIT_S}s (it sees $(ready_in_lb))"
  sleep 1
done
log "ok   HAProxy sees 2 ready replicas (health checks on /readyz)"

check lb-readyz 200 GET /readyz
check lb-pay 204 POST "$(pay_path lb-1)" "$PAY_BODY" x-request-id wechatpay-request-id

# The same Idempotency-Key twice: round robin sends the second call to the other replica, which answers from Redis.
key="smoke-$PROJECT"
HEADER="Idempotency-Key: $key"
check lb-key-first 204 POST "$(pay_path lb-key)" "$PAY_BODY"
check lb-key-replay 204 POST "$(pay_path lb-key)" "$PAY_BODY" "idempotent-replayed: true"
HEADER=
# Which replica answered each: their audit lines (which may reach `docker logs` a moment after the answer).
deadline=$((SECONDS + 10))
while :; do
  first=; replay=
  for c in "${gateways[@]}"; do
    lines=$(docker logs "$c" 2>/dev/null | grep '"msg":"operation"' | grep -F "\"idempotencyKey\":\"$key\"" || true)
    if grep -q '"replayed":false' <<<"$lines"; then first=$c; fi
    if grep -q '"replayed":true' <<<"$lines"; then replay=$c; fi
  done
  if [ -n "$first" ] && [ -n "$replay" ] || [ "$SECONDS" -ge "$deadline" ]; then break; fi
  sleep 0.5
done
[ -n "$first" ] && [ -n "$replay" ] || fail "the audit lines of key $key are not where expected (first: ${first:-none}, replay: ${replay:-none})"
[ "$first" != "$replay" ] || fail "both calls with key $key went to the same replica: the replay did not come from Redis"
log "ok   lb-key-replay answered by the other replica (${replay:0:12}; first call on ${first:0:12})"

# One replica stops (SIGTERM, drain, exit) while calls go on through the load balancer: none of them may fail.
: >"$WORK/statuses"
(
  set +e
  n=0
  while [ ! -e "$WORK/stop" ]; do
    n=$((n + 1))
    out=$(http POST "$(pay_path "drain-$n")" "$PAY_BODY" 2>/dev/null)
    echo "${out%%$'\n'*}" >>"$WORK/statuses"
    sleep 0.05
  done
) &
LOOP_PID=$!
sleep 1
t0=$SECONDS
docker stop -t 25 "${gateways[0]}" >/dev/null
stopped_in=$((SECONDS - t0))
sleep 1
touch "$WORK/stop"
wait "$LOOP_PID" || true
LOOP_PID=
code=$(docker inspect -f '{{.State.ExitCode}}' "${gateways[0]}")
[ "$code" = 0 ] || fail "replica exited with code $code on SIGTERM"
[ "$stopped_in" -lt 20 ] || fail "replica took ${stopped_in}s to stop"
calls=$(wc -l <"$WORK/statuses")
bad=$(grep -cvx 204 "$WORK/statuses" || true)
[ "$calls" -ge 10 ] || fail "only $calls calls made while a replica stopped"
[ "$bad" = 0 ] || fail "$bad of $calls calls failed while a replica stopped: $(sort "$WORK/statuses" | uniq -c | tr '\n' ' ')"
log "ok   lb-drain: $calls calls, all 204, while a replica stopped (exit code 0 in ${stopped_in}s)"

log "PASS in $((SECONDS - START))s"
