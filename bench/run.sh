#!/usr/bin/env bash
# Benchmarks outrider's inbound proxy against nginx, HAProxy, Caddy and the
# app itself (direct), all on 127.0.0.1, over a matrix of workloads and core
# budgets. See docs/benchmarks.md.
#
# Knobs (environment):
#   WORKLOADS="small 16k 1m upload close conns1000 fixedrate"  rows to run
#   CORES="1 2"         core budgets; each proxy runs once per budget
#   TARGETS="direct nginx haproxy caddy outrider"   peers, and round 1's order;
#                       add goloop (bench/cmd/goloop, a minimal event-loop
#                       proxy in Go) to see the floor of that design, and
#                       gnetloop (bench/cmd/gnetloop, the same on the gnet
#                       library) to see what that library costs on it, and
#                       uringloop (bench/cmd/uringloop, the same on io_uring)
#   DURATION=10s        length of one measured run
#   ROUNDS=5            interleaved rounds; each runs every (workload, target)
#   WARMUP=2s           unmeasured wrk run before each measured one
#   CONNECTIONS=32      wrk connections of the keep-alive rows (wrk -t1)
#   HIGH_CONNECTIONS=1000   connections of the conns1000 row
#   FIXED_RATE=5000 FIXED_CLIENTS=50   the fixedrate row (bench/cmd/fixedrate,
#                       keep-alive)
#   PIN=1               taskset each proxy to its core budget; 0 leaves
#                       placement to the scheduler
#   FRESH=1             start each proxy anew before each of its runs, so
#                       that a row's RSS is that row's own; 0 keeps one
#                       process per proxy and budget for the whole matrix,
#                       and a row's RSS then carries what earlier rows left
#   OUTRIDER_BIN=       an outrider binary to measure instead of building bin/outrider
#   BASE_PORT=18080     first loopback port tried; free ones are taken
#   RESULTS=bench/results/<timestamp>         where raw outputs go
#
# It installs wrk, nginx, haproxy and caddy from Debian's packages when
# missing, builds bench/cmd/fixedrate for the fixedrate row, runs every
# server un-daemonized as its child with config generated into a
# temporary directory, and stops all of them on exit or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

WORKLOADS=${WORKLOADS:-small 16k 1m upload close conns1000 fixedrate}
CORES=${CORES:-1 2}
TARGETS=${TARGETS:-direct nginx haproxy caddy outrider}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-5}
WARMUP=${WARMUP:-2s}
CONNECTIONS=${CONNECTIONS:-32}
HIGH_CONNECTIONS=${HIGH_CONNECTIONS:-1000}
FIXED_RATE=${FIXED_RATE:-5000}
FIXED_CLIENTS=${FIXED_CLIENTS:-50}
PIN=${PIN:-1}
FRESH=${FRESH:-1}
BASE_PORT=${BASE_PORT:-18080}
RESULTS=${RESULTS:-bench/results/$(date -u +%Y%m%dT%H%M%SZ)}

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

# Knobs of the single-workload benchmark that the matrix replaced.
[ -z "${GOMAXPROCS_OUTRIDER:-}" ] || die "GOMAXPROCS_OUTRIDER is gone: CORES=\"1 2\" runs outrider (and every peer) at each core budget"
[ -z "${HIGH_DURATION:-}" ] || die "HIGH_DURATION is gone: the conns1000 row runs for DURATION like the others"

for knob in ROUNDS CONNECTIONS HIGH_CONNECTIONS FIXED_RATE FIXED_CLIENTS BASE_PORT; do
	[[ ${!knob} =~ ^[1-9][0-9]*$ ]] || die "$knob=${!knob}: want a positive integer"
done
for knob in DURATION WARMUP; do
	[[ ${!knob} =~ ^[1-9][0-9]*[sm]$ ]] || die "$knob=${!knob}: want a duration in seconds or minutes, such as 10s or 2m"
done
[[ $PIN =~ ^[01]$ ]] || die "PIN=$PIN: want 1 (taskset each proxy) or 0"
[[ $FRESH =~ ^[01]$ ]] || die "FRESH=$FRESH: want 1 (each proxy started anew before each run) or 0 (one process for the whole run)"
[ "$FIXED_CLIENTS" -le "$FIXED_RATE" ] || die "FIXED_CLIENTS=$FIXED_CLIENTS: want at most FIXED_RATE=$FIXED_RATE"

ALL_WORKLOADS="small 16k 1m upload close conns1000 fixedrate"
ALL_TARGETS="direct nginx haproxy caddy goloop gnetloop uringloop outrider"
for w in $WORKLOADS; do
	[[ " $ALL_WORKLOADS " == *" $w "* ]] || die "WORKLOADS: unknown workload $w (want some of: $ALL_WORKLOADS)"
done
for t in $TARGETS; do
	[[ " $ALL_TARGETS " == *" $t "* ]] || die "TARGETS: unknown target $t (want some of: $ALL_TARGETS)"
done
[ -n "$WORKLOADS" ] || die "WORKLOADS is empty (want some of: $ALL_WORKLOADS)"
[ -n "$TARGETS" ] || die "TARGETS is empty (want some of: $ALL_TARGETS)"
NCPU=$(nproc)
for c in $CORES; do
	[[ $c =~ ^[1-9][0-9]*$ ]] || die "CORES: $c is not a positive integer"
	[ "$c" -le "$NCPU" ] || die "CORES: $c cores asked, this machine has $NCPU"
done
[ -n "$CORES" ] || die "CORES is empty (want core budgets such as \"1 2\")"

# seconds converts a duration such as 10s or 2m to seconds.
seconds() {
	case $1 in
	*m) echo $((${1%m} * 60)) ;;
	*s) echo "${1%s}" ;;
	esac
}

wants() { [[ " $1 " == *" $2 "* ]]; }

# --- tools -----------------------------------------------------------------

# UNAVAILABLE lists the targets left out, each as "target<TAB>reason".
UNAVAILABLE=()

have() { command -v "$1" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin command -v "$1" >/dev/null 2>&1; }

install_tools() {
	local tools=(wrk) missing=() tool t
	for t in nginx haproxy caddy; do
		if wants "$TARGETS" "$t"; then tools+=("$t"); fi
	done
	for tool in "${tools[@]}"; do
		have "$tool" || missing+=("$tool")
	done
	if [ ${#missing[@]} -eq 0 ]; then return; fi
	command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
	local sudo=()
	[ "$(id -u)" -eq 0 ] || sudo=(sudo)
	"${sudo[@]}" apt-get update -q || die "apt-get update failed"
	# A tool that this Debian release does not ship: Caddy is left out and
	# said so; the others are needed.
	local packages=() pkg
	for tool in "${missing[@]}"; do
		pkg=$tool # each tool's Debian package has its name
		if apt-cache policy "$pkg" 2>/dev/null | grep -q 'Candidate: (none)' ||
			[ -z "$(apt-cache policy "$pkg" 2>/dev/null)" ]; then
			if [ "$tool" = caddy ]; then
				say "caddy: Debian's package $pkg is not available here; leaving Caddy out"
				UNAVAILABLE+=("caddy	Debian package $pkg not available")
				continue
			fi
			die "$tool: Debian's package $pkg is not available here"
		fi
		packages+=("$pkg")
	done
	if [ ${#packages[@]} -eq 0 ]; then return; fi
	say "installing ${packages[*]} from Debian's packages"
	# Debian starts a package's service on install unless policy-rc.d says
	# no; the benchmark wants none, so block it for the install when no
	# policy is in place, and remove the block afterwards.
	local policy=/usr/sbin/policy-rc.d added=
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
		"${sudo[@]}" chmod 755 "$policy"
		added=1
	fi
	local status=0
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q "${packages[@]}" || status=$?
	if [ -n "$added" ]; then "${sudo[@]}" rm -f "$policy"; fi
	[ "$status" -eq 0 ] || die "apt-get install ${packages[*]} failed (status $status)"
}

install_tools
export PATH=$PATH:/usr/sbin:/sbin
command -v go >/dev/null 2>&1 || die "go is not installed"

say "building bin/echo"
make -s echo
if [ -n "${OUTRIDER_BIN:-}" ]; then
	[ -x "$OUTRIDER_BIN" ] || die "OUTRIDER_BIN=$OUTRIDER_BIN is not an executable"
elif wants "$TARGETS" outrider; then
	OUTRIDER_BIN=bin/outrider
	say "building bin/outrider"
	if ! make -s outrider; then
		say "outrider: proxy not available (bin/outrider does not build)"
		UNAVAILABLE+=("outrider	bin/outrider does not build")
	fi
fi

if wants "$WORKLOADS" fixedrate; then
	say "building bin/fixedrate"
	(cd bench && go build -o ../bin/fixedrate ./cmd/fixedrate) || die "bench/cmd/fixedrate does not build"
fi

for loop in goloop gnetloop uringloop; do
	if wants "$TARGETS" "$loop"; then
		say "building bin/$loop"
		if ! (cd bench && go build -o "../bin/$loop" "./cmd/$loop"); then
			say "$loop: not available (bench/cmd/$loop does not build)"
			UNAVAILABLE+=("$loop	bench/cmd/$loop does not build")
		fi
	fi
done

# --- processes -------------------------------------------------------------

# Two benchmarks at once on two cores measure each other: take turns. The
# servers do not inherit the lock (9>&- below).
exec 9>"${TMPDIR:-/tmp}/outrider-bench.lock"
if ! flock -n 9; then
	say "another bench/run.sh is running; waiting for it to finish"
	flock 9
fi

# shellcheck source=bench/procs.sh
. bench/procs.sh
start_scratch bench

# Servers such as HAProxy size their tables from the file limit, and the
# conns1000 row needs two descriptors per connection in each proxy.
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -gt 65536 ]; then hard=65536; fi
ulimit -n "$hard"
[ "$hard" -ge $((HIGH_CONNECTIONS * 2 + 256)) ] ||
	say "warning: ulimit -n is $hard, low for $HIGH_CONNECTIONS connections"

next_port=$BASE_PORT

# http_ok tells whether GET / on 127.0.0.1:$1 answers 200.
http_ok() (
	exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
	printf 'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
	IFS= read -r -t 2 line <&3 || exit 1
	[[ $line == "HTTP/1."?" 200"* ]]
)

# wait_http waits up to $2 seconds for http_ok on port $1 while pid $3 lives.
wait_http() {
	local i
	for i in $(seq $(($2 * 10))); do
		http_ok "$1" 2>/dev/null && return 0
		kill -0 "$3" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

# children prints the pids whose parent is $1.
children() {
	local stat rest f
	for stat in /proc/[0-9]*/stat; do
		read -r rest 2>/dev/null <"$stat" || continue
		read -r -a f <<<"${rest##*") "}"
		# After "comm) " come state, then ppid.
		if [ "${f[1]}" = "$1" ]; then
			stat=${stat#/proc/}
			echo "${stat%/stat}"
		fi
	done
}

# cpus_for prints the CPU list that a proxy with a budget of $1 cores is
# pinned to: the last $1 CPUs, so that the one-core proxies share CPU
# $NCPU-1 and leave CPU 0 to the load generator and the app more often.
cpus_for() {
	if [ "$1" -eq 1 ]; then
		echo "$((NCPU - 1))"
	else
		echo "$((NCPU - $1))-$((NCPU - 1))"
	fi
}

# pin_prefix sets PINNED to the command prefix that pins a server to a
# budget of $1 cores: taskset when PIN=1, nothing otherwise. A prefix, not
# a function, so that "${PINNED[@]}" server & leaves the server's pid in $!
# (taskset execs its command; a function would run in a subshell).
pin_prefix() {
	PINNED=()
	if [ "$PIN" = 1 ]; then PINNED=(taskset -c "$(cpus_for "$1")"); fi
}

RESULTS=$(mkdir -p "$RESULTS" && cd "$RESULTS" && pwd)
take_port APP_PORT
declare -A PORT PROC

say "starting the sample app on 127.0.0.1:$APP_PORT"
bin/echo -listen "127.0.0.1:$APP_PORT" >"$RESULTS/echo.log" 2>&1 9>&- &
APP_PID=$!
PIDS+=("$APP_PID")
wait_http "$APP_PORT" 10 "$APP_PID" || die "the sample app does not answer (see $RESULTS/echo.log)"

# Each start_<target> CORES starts one server with that core budget under
# the key target:cores, or adds it to UNAVAILABLE.

start_nginx() {
	local cores=$1 key=nginx:$1 port dir=$TMP/nginx-$1 pid
	take_port port
	nginx_conf "$dir" "$port" "$APP_PORT" "$cores" "$hard"
	pin_prefix "$cores"
	"${PINNED[@]}" nginx -p "$dir" -e "$dir/logs/error.log" -c "$dir/nginx.conf" -g 'daemon off;' >>"$RESULTS/nginx-${cores}c.log" 2>&1 9>&- &
	pid=$!
	PIDS+=("$pid")
	PORT[$key]=$port
	if ! wait_http "$port" 10 "$pid"; then
		cat "$dir/logs/error.log" >>"$RESULTS/nginx-${cores}c.log" 2>/dev/null || true
		die "nginx ($cores cores) does not answer (see $RESULTS/nginx-${cores}c.log)"
	fi
	# The master plus its workers.
	PROC[$key]="$pid $(children "$pid" | tr '\n' ' ')"
}

start_haproxy() {
	local cores=$1 key=haproxy:$1 port dir=$TMP/haproxy-$1 pid
	take_port port
	mkdir -p "$dir"
	# X-Forwarded-For, -Proto and -Host, as outrider and nginx_conf send.
	cat >"$dir/haproxy.cfg" <<EOF
global
    nbthread $cores
    maxconn 8192

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend bench
    bind 127.0.0.1:$port
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    default_backend app

backend app
    server app 127.0.0.1:$APP_PORT maxconn 4096
EOF
	pin_prefix "$cores"
	"${PINNED[@]}" haproxy -db -f "$dir/haproxy.cfg" >>"$RESULTS/haproxy-${cores}c.log" 2>&1 9>&- &
	pid=$!
	PIDS+=("$pid")
	PORT[$key]=$port
	wait_http "$port" 10 "$pid" || die "haproxy ($cores cores) does not answer (see $RESULTS/haproxy-${cores}c.log)"
	PROC[$key]="$pid $(children "$pid" | tr '\n' ' ')"
}

start_caddy() {
	local cores=$1 key=caddy:$1 port dir=$TMP/caddy-$1 pid
	take_port port
	mkdir -p "$dir"
	# No admin endpoint, no automatic HTTPS, HTTP/1.1 only (no UDP
	# listener for HTTP/3), no access log (Caddy's default). Its
	# reverse_proxy sends X-Forwarded-For, -Proto and -Host by default.
	cat >"$dir/Caddyfile" <<EOF
{
	admin off
	auto_https off
	servers {
		protocols h1
	}
}
http://127.0.0.1:$port {
	bind 127.0.0.1
	reverse_proxy 127.0.0.1:$APP_PORT
}
EOF
	# Caddy keeps state under HOME and the XDG directories: keep it in the
	# temporary directory.
	pin_prefix "$cores"
	"${PINNED[@]}" env "GOMAXPROCS=$cores" "HOME=$dir" "XDG_DATA_HOME=$dir/data" "XDG_CONFIG_HOME=$dir/config" \
		caddy run --config "$dir/Caddyfile" --adapter caddyfile >>"$RESULTS/caddy-${cores}c.log" 2>&1 9>&- &
	pid=$!
	PIDS+=("$pid")
	PORT[$key]=$port
	if ! wait_http "$port" 10 "$pid"; then
		say "caddy ($cores cores): not available (see $RESULTS/caddy-${cores}c.log)"
		UNAVAILABLE+=("$key	nothing answers on its port")
		kill -TERM "$pid" 2>/dev/null || true
		return
	fi
	PROC[$key]=$pid
}

start_outrider() {
	local cores=$1 key=outrider:$1 port metrics admin pid
	take_port port
	take_port metrics
	take_port admin
	pin_prefix "$cores"
	outrider_env "$APP_PORT" "$port" "$metrics" "$admin"
	"${PINNED[@]}" env "${OUTRIDER_ENV[@]}" \
		OUTRIDER_DRAIN_TIMEOUT=2s \
		"GOMAXPROCS=$cores" \
		"$OUTRIDER_BIN" >>"$RESULTS/outrider-${cores}c.log" 2>&1 9>&- &
	pid=$!
	PIDS+=("$pid")
	PORT[$key]=$port
	if ! wait_http "$port" 10 "$pid"; then
		say "outrider ($cores cores): proxy not available (nothing answers on 127.0.0.1:$port; see $RESULTS/outrider-${cores}c.log)"
		UNAVAILABLE+=("$key	nothing answers on its proxy port")
		# Out of the way of the others' measurements.
		kill -TERM "$pid" 2>/dev/null || true
		return
	fi
	PROC[$key]=$pid
}

# goloop, gnetloop and uringloop are the bench's own event-loop proxies: floors, not
# products. start_loop starts bin/$1 with $2 cores.
start_loop() {
	local name=$1 cores=$2 key=$1:$2 port pid
	take_port port
	pin_prefix "$cores"
	"${PINNED[@]}" env "GOMAXPROCS=$cores" "bin/$name" -listen "127.0.0.1:$port" -app "127.0.0.1:$APP_PORT" \
		>>"$RESULTS/$name-${cores}c.log" 2>&1 9>&- &
	pid=$!
	PIDS+=("$pid")
	PORT[$key]=$port
	wait_http "$port" 10 "$pid" || die "$name ($cores cores) does not answer (see $RESULTS/$name-${cores}c.log)"
	PROC[$key]=$pid
}
start_goloop() { start_loop goloop "$1"; }
start_gnetloop() { start_loop gnetloop "$1"; }
start_uringloop() { start_loop uringloop "$1"; }

# restart stops target:cores $1 and starts it again, on new ports, for
# FRESH=1. TERM, as every server here stops at once on it with nothing in
# flight (nginx's master takes its workers along; a KILLed master would
# leave them serving); KILL after 5 s.
restart() {
	local key=$1 pid i left keep=()
	# shellcheck disable=SC2086 # PROC holds a list of pids.
	kill -TERM ${PROC[$key]} 2>/dev/null || true
	for i in $(seq 50); do
		left=0
		for pid in ${PROC[$key]}; do
			if kill -0 "$pid" 2>/dev/null; then left=1; fi
		done
		[ "$left" = 1 ] || break
		sleep 0.1
	done
	# shellcheck disable=SC2086
	kill -KILL ${PROC[$key]} 2>/dev/null || true
	# The old pids leave PIDS: the exit trap must not signal a stranger that
	# inherits one.
	for pid in "${PIDS[@]}"; do
		[[ " ${PROC[$key]} " == *" $pid "* ]] || keep+=("$pid")
	done
	PIDS=("${keep[@]}")
	"start_${key%%:*}" "${key#*:}"
}

# unavailable tells whether target $1 (target or target:cores) is left out.
unavailable() {
	local u
	for u in "${UNAVAILABLE[@]}"; do
		u=${u%%	*}
		if [ "$u" = "$1" ] || [ "$u" = "${1%%:*}" ]; then return 0; fi
	done
	return 1
}

# ACTIVE lists what is measured in every workload: direct (the app alone,
# no core budget of its own) and target:cores for each proxy and budget.
ACTIVE=()
for target in $TARGETS; do
	if [ "$target" = direct ]; then
		PORT[direct]=$APP_PORT
		PROC[direct]=$APP_PID
		ACTIVE+=(direct)
		continue
	fi
	for cores in $CORES; do
		if unavailable "$target:$cores"; then continue; fi
		say "starting $target with $cores core(s)"
		"start_$target" "$cores"
		if unavailable "$target:$cores"; then continue; fi
		ACTIVE+=("$target:$cores")
	done
done
[ ${#ACTIVE[@]} -gt 0 ] || die "no target answers"

# --- workloads ---------------------------------------------------------------

# The upload row's body: 64 KiB, POSTed to the app's /echo, which streams
# it back.
cat >"$TMP/upload.lua" <<'EOF'
wrk.method = "POST"
wrk.body = string.rep("a", 65536)
wrk.headers["Content-Type"] = "application/octet-stream"
EOF

# wrk_args prints, one per line, the wrk arguments of workload $1 against
# port $2 (without the duration). fixedrate warms up as small does.
wrk_args() {
	local base=http://127.0.0.1:$2
	case $1 in
	small | fixedrate) printf '%s\n' -t1 "-c$CONNECTIONS" "$base/" ;;
	16k) printf '%s\n' -t1 "-c$CONNECTIONS" "$base/bytes?n=16384" ;;
	1m) printf '%s\n' -t1 "-c$CONNECTIONS" "$base/bytes?n=1048576" ;;
	upload) printf '%s\n' -t1 "-c$CONNECTIONS" -s "$TMP/upload.lua" "$base/echo" ;;
	close) printf '%s\n' -t1 "-c$CONNECTIONS" -H 'Connection: close' "$base/" ;;
	conns1000) printf '%s\n' -t1 "-c$HIGH_CONNECTIONS" "$base/" ;;
	esac
}

# The fixedrate row: FIXED_CLIENTS keep-alive connections sending
# FIXED_RATE requests per second between them, on schedules staggered
# evenly, for DURATION; bench/cmd/fixedrate logs every request's duration
# in microseconds. It has no run time limit of its own beyond a 5 s limit
# per answer: FIXED_LIMIT bounds it, in case a target stops answering.
FIXED_LIMIT=$(($(seconds "$DURATION") * 3 + 30))

# run_bg FILE CMD... runs a load generator with its output in FILE while
# sampling the RSS of the pids in SAMPLE_PIDS every half second; it sets
# PEAK_RSS to the largest sum seen. It runs in the background under wait so
# that Ctrl-C reaches the trap at once: bash holds a trap back while a
# foreground child that handles SIGINT itself (as wrk does) is running.
run_bg() {
	local out=$1 pid status=0 rss
	shift
	"$@" >"$out" 2>&1 9>&- &
	pid=$!
	PIDS+=("$pid")
	PEAK_RSS=0
	while kill -0 "$pid" 2>/dev/null; do
		# shellcheck disable=SC2086 # SAMPLE_PIDS holds a list of pids.
		rss=$(rss_kb $SAMPLE_PIDS)
		if [ "$rss" -gt "$PEAK_RSS" ]; then PEAK_RSS=$rss; fi
		sleep 0.5
	done
	wait "$pid" || status=$?
	unset 'PIDS[-1]'
	return "$status"
}

# version prints the first line of a tool's version output, or "-".
version() { "$@" 2>&1 | head -n 1 || echo -; }

{
	echo "date	$(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "clk_tck	$(getconf CLK_TCK)"
	echo "cpus	$NCPU"
	echo "duration	$DURATION"
	echo "warmup	$WARMUP"
	echo "rounds	$ROUNDS"
	echo "fresh	$FRESH"
	echo "workloads	$WORKLOADS"
	echo "cores	$CORES"
	echo "connections	$CONNECTIONS"
	echo "high_connections	$HIGH_CONNECTIONS"
	echo "fixed_rate	$FIXED_RATE"
	echo "fixed_clients	$FIXED_CLIENTS"
	if [ "$PIN" = 1 ]; then
		for c in $CORES; do echo "pin_$c	$(cpus_for "$c")"; done
	else
		echo "pin	off"
	fi
	echo "wrk	$(wrk -v 2>&1 | awk 'NR == 1 { print $1, $2 }' || true)"
	if wants "$WORKLOADS" fixedrate; then echo "fixedrate	fixedrate (bench/cmd/fixedrate)"; fi
	if wants "$TARGETS" nginx; then echo "nginx	$(nginx -v 2>&1 | sed 's/^nginx version: //' || true)"; fi
	if wants "$TARGETS" haproxy; then echo "haproxy	$(haproxy -v 2>&1 | awk 'NR == 1 { print $1, $3 }' || true)"; fi
	if wants "$TARGETS" caddy && have caddy; then echo "caddy	Caddy $(version caddy version | awk '{ print $1 }')"; fi
	if wants "$TARGETS" goloop; then echo "goloop	goloop (bench/cmd/goloop)"; fi
	if wants "$TARGETS" uringloop; then echo "uringloop	uringloop (bench/cmd/uringloop, io_uring)"; fi
	if wants "$TARGETS" gnetloop; then echo "gnetloop	gnetloop (bench/cmd/gnetloop, gnet $(cd bench && go list -m -f '{{.Version}}' github.com/panjf2000/gnet/v2))"; fi
	if wants "$TARGETS" outrider; then echo "outrider	$("${OUTRIDER_BIN:-bin/outrider}" version 2>&1 | awk 'NR == 1 { print $2 }' || true)"; fi
	echo "commit	$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
	echo "load_start	$(cut -d' ' -f1 /proc/loadavg)"
	for u in "${UNAVAILABLE[@]}"; do
		echo "unavailable	$u"
	done
} >"$RESULTS/info.tsv"

# --- measured rounds --------------------------------------------------------

printf 'workload\tcores\ttarget\tround\ttool\tfile\tlatency_file\tproxy_ticks\tapp_ticks\trss_kb\n' >"$RESULTS/runs.tsv"
n=${#ACTIVE[@]}
for round in $(seq "$ROUNDS"); do
	for workload in $WORKLOADS; do
		for i in $(seq 0 $((n - 1))); do
			key=${ACTIVE[$(((i + round - 1) % n))]}
			target=${key%%:*}
			cores=-
			if [ "$key" != direct ]; then cores=${key#*:}; fi
			port=${PORT[$key]}
			mapfile -t args < <(wrk_args "$workload" "$port")
			label=$target
			if [ "$cores" != - ]; then label="$target, $cores core(s)"; fi
			say "round $round/$ROUNDS, $workload: $label"
			if [ "$FRESH" = 1 ] && [ "$key" != direct ]; then
				if unavailable "$key"; then continue; fi
				restart "$key"
				if unavailable "$key"; then
					say "$label did not start again; left out from here on"
					continue
				fi
				port=${PORT[$key]}
				mapfile -t args < <(wrk_args "$workload" "$port")
			fi
			SAMPLE_PIDS=${PROC[$key]}
			run_bg /dev/null wrk "${args[@]}" -d"$WARMUP" || say "warm-up of $key failed"
			# shellcheck disable=SC2086 # PROC holds a list of pids.
			proxy0=$(cpu_ticks ${PROC[$key]})
			app0=$(cpu_ticks "$APP_PID")
			stem=round$round-$workload-$target
			if [ "$cores" != - ]; then stem=$stem-${cores}c; fi
			file=$stem.txt
			latency_file=-
			if [ "$workload" = fixedrate ]; then
				tool=fixedrate
				latency_file=$stem.log
				run_bg "$RESULTS/$file" timeout "$FIXED_LIMIT" bin/fixedrate -url "http://127.0.0.1:$port/" \
					-rate "$FIXED_RATE" -connections "$FIXED_CLIENTS" -duration "$DURATION" \
					-log "$RESULTS/$latency_file" ||
					say "fixedrate failed for $key (see $RESULTS/$file)"
			else
				tool=wrk
				run_bg "$RESULTS/$file" wrk "${args[@]}" -d"$DURATION" --latency ||
					say "wrk failed for $key (see $RESULTS/$file)"
			fi
			# shellcheck disable=SC2086
			proxy1=$(cpu_ticks ${PROC[$key]})
			app1=$(cpu_ticks "$APP_PID")
			if [ "$latency_file" != - ]; then
				gzip -f "$RESULTS/$latency_file" 2>/dev/null || touch "$RESULTS/$latency_file"
				if [ -e "$RESULTS/$latency_file.gz" ]; then latency_file=$latency_file.gz; fi
			fi
			# direct's CPU is the app's own, counted once, as app_ticks.
			ticks=$((proxy1 - proxy0))
			if [ "$key" = direct ]; then ticks=-; fi
			printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$workload" "$cores" "$target" "$round" "$tool" \
				"$file" "$latency_file" "$ticks" $((app1 - app0)) "$PEAK_RSS" >>"$RESULTS/runs.tsv"
		done
	done
done

# --- summary ----------------------------------------------------------------

printf 'load_end\t%s\n' "$(cut -d' ' -f1 /proc/loadavg)" >>"$RESULTS/info.tsv"

# The summary and its charts live in their own module (bench/go.mod), so
# that the plotting library stays out of outrider's.
(cd bench && go run ./cmd/benchsummary -dir "$RESULTS") | tee "$RESULTS/summary.txt"
say "raw outputs, summary and charts in $RESULTS"
