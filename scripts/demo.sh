#!/usr/bin/env bash
# The demo: a Consul dev server and two replicas of the sample app, all on
# 127.0.0.1: one with outrider beside it (the sidecar form), one started by
# outrider (wrap mode, `outrider run -- app`). Ctrl-C stops everything.
# `make demo` builds and runs it.
set -euo pipefail
cd "$(dirname "$0")/.."

CONSUL_PORT=${CONSUL_PORT:-8500}
# The dev server's RPC and gossip ports. A Consul agent already on this host
# (a VM's usual client agent) holds 8301, a server 8300 and 8302 too,
# whatever its HTTP port: moving CONSUL_PORT alone does not get past it.
CONSUL_SERVER_PORT=${CONSUL_SERVER_PORT:-8300}
CONSUL_SERF_LAN_PORT=${CONSUL_SERF_LAN_PORT:-8301}
CONSUL_SERF_WAN_PORT=${CONSUL_SERF_WAN_PORT:-8302}
APP_ADDR=${APP_ADDR:-127.0.0.1:8080}
PROXY_ADDR=${PROXY_ADDR:-127.0.0.1:15001}
METRICS_ADDR=${METRICS_ADDR:-127.0.0.1:15090}
ADMIN_ADDR=${ADMIN_ADDR:-127.0.0.1:15000}
# The second replica, in wrap mode.
APP2_ADDR=${APP2_ADDR:-127.0.0.1:8081}
PROXY2_ADDR=${PROXY2_ADDR:-127.0.0.1:15011}
METRICS2_ADDR=${METRICS2_ADDR:-127.0.0.1:15091}
ADMIN2_ADDR=${ADMIN2_ADDR:-127.0.0.1:15010}

busy=
for var in CONSUL_PORT CONSUL_SERVER_PORT CONSUL_SERF_LAN_PORT CONSUL_SERF_WAN_PORT \
	APP_ADDR PROXY_ADDR METRICS_ADDR ADMIN_ADDR APP2_ADDR PROXY2_ADDR METRICS2_ADDR ADMIN2_ADDR; do
	addr=${!var}
	[[ $addr == *:* ]] || addr=127.0.0.1:$addr
	if (exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}") 2>/dev/null; then
		echo "demo: $addr is already in use; stop what listens there, or set $var to a free one" >&2
		busy=1
	fi
done
[ -z "$busy" ] || exit 1

logs=$(mktemp -d)
# Every process started so far, in the order started; cleanup stops them in
# reverse: each outrider (it drains first), then the app, then Consul.
pids=()
# Each server runs in a session of its own (setsid), so that a terminal's
# Ctrl-C reaches this script alone: cleanup then stops them in order, one
# signal each. Sent to the whole foreground group, it would stop Consul at
# once and give each outrider a second signal, which cuts its drain short.
# Cleanup ends the script: a Ctrl-C during start-up must not go on starting
# servers that nothing would stop.
# Another Ctrl-C while they stop must not end the script and leave the
# rest running: it is passed on to the one stopping, as a second SIGTERM,
# which cuts an outrider's drain short.
cleanup() {
	local status=${1:-$?}
	trap - EXIT
	stopping=
	trap 'kill -TERM "$stopping" 2>/dev/null || true' INT TERM
	echo
	echo "demo: stopping the replicas (each drains first) and consul"
	# outrider first, so it deregisters while Consul is still up.
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
		stopping=${pids[i]}
		kill -TERM "$stopping" 2>/dev/null || true
		# A trapped signal ends wait early: wait until the process is gone.
		while kill -0 "$stopping" 2>/dev/null; do
			wait "$stopping" 2>/dev/null || true
		done
	done
	echo "demo: logs were in $logs"
	exit "$status"
}
trap 'cleanup 130' INT
trap 'cleanup 143' TERM
trap cleanup EXIT

wait_http() {
	for _ in $(seq 1 200); do
		curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	echo "demo: $1 did not answer; see $logs" >&2
	return 1
}

setsid bin/consul agent -dev -bind 127.0.0.1 -client 127.0.0.1 -http-port "$CONSUL_PORT" \
	-server-port "$CONSUL_SERVER_PORT" -serf-lan-port "$CONSUL_SERF_LAN_PORT" -serf-wan-port "$CONSUL_SERF_WAN_PORT" \
	-dns-port -1 -grpc-port -1 -grpc-tls-port -1 -log-level warn >"$logs/consul.log" 2>&1 &
pids+=($!)
setsid bin/echo -listen "$APP_ADDR" >"$logs/echo.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$CONSUL_PORT/v1/status/leader"

OUTRIDER_SERVICE_NAME=echo \
OUTRIDER_SERVICE_ADDRESS=127.0.0.1 \
OUTRIDER_SERVICE_TAGS=demo \
OUTRIDER_APP_ADDR="$APP_ADDR" \
OUTRIDER_PROBE="http://$APP_ADDR/healthz" \
OUTRIDER_PROBE_PERIOD=2s \
OUTRIDER_PROXY_LISTEN="$PROXY_ADDR" \
OUTRIDER_METRICS_LISTEN="$METRICS_ADDR" \
OUTRIDER_ADMIN_LISTEN="$ADMIN_ADDR" \
OUTRIDER_DRAIN_DELAY=1s \
OUTRIDER_LOG_FORMAT=text \
CONSUL_HTTP_ADDR="127.0.0.1:$CONSUL_PORT" \
	setsid bin/outrider > >(trap '' INT; exec tee "$logs/outrider.log") 2>&1 &
outrider_pid=$!
pids+=("$outrider_pid")

# The second replica: outrider starts the app itself and stops it after
# the drain.
OUTRIDER_SERVICE_NAME=echo \
OUTRIDER_SERVICE_ID=echo-wrapped \
OUTRIDER_SERVICE_ADDRESS=127.0.0.1 \
OUTRIDER_SERVICE_TAGS=demo,wrapped \
OUTRIDER_APP_ADDR="$APP2_ADDR" \
OUTRIDER_PROBE="http://$APP2_ADDR/healthz" \
OUTRIDER_PROBE_PERIOD=2s \
OUTRIDER_PROXY_LISTEN="$PROXY2_ADDR" \
OUTRIDER_METRICS_LISTEN="$METRICS2_ADDR" \
OUTRIDER_ADMIN_LISTEN="$ADMIN2_ADDR" \
OUTRIDER_DRAIN_DELAY=1s \
OUTRIDER_LOG_FORMAT=text \
CONSUL_HTTP_ADDR="127.0.0.1:$CONSUL_PORT" \
	setsid bin/outrider run -- bin/echo -listen "$APP2_ADDR" >"$logs/wrapped.log" 2>&1 &
pids+=($!)
wait_http "http://$METRICS_ADDR/healthz"
wait_http "http://$METRICS2_ADDR/healthz"

cat <<MSG

outrider is running beside the sample app. Look at:
  Consul UI        http://127.0.0.1:$CONSUL_PORT/ui/dc1/services/echo
  Consul API       curl -s http://127.0.0.1:$CONSUL_PORT/v1/health/service/echo | head -c 600
  readiness        curl -s http://$METRICS_ADDR/ready
  metrics          curl -s http://$METRICS_ADDR/metrics | grep ^outrider_
  state            curl -s http://$ADMIN_ADDR/status
  the app itself   curl -s http://$APP_ADDR/
  the app, proxied curl -s http://$PROXY_ADDR/
  make it sick     curl -s -X POST 'http://$APP_ADDR/admin/health?healthy=false'

Scale in without losing a request: start a client that finds the replicas
in Consul and never retries, then drain the first replica while it runs:
  bin/loadgen -consul 127.0.0.1:$CONSUL_PORT -service echo -rate 200 -duration 15s > /tmp/load.json &
  sleep 3; curl -s -X POST http://$ADMIN_ADDR/prestop; echo
  wait; grep -m3 -E '"(requests|ok|failed)"' /tmp/load.json
The drain report says how many requests the replica still served after it
left Consul; the client's summary shows 0 failed.

Press Ctrl-C to stop consul, the apps and outrider.
MSG
wait "$outrider_pid"
