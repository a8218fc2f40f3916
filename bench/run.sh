#!/usr/bin/env bash
# Benchmarks outrider's inbound proxy against nginx, HAProxy and the app
# itself (direct), all on 127.0.0.1. See docs/benchmarks.md.
#
# Knobs (environment):
#   DURATION=10s        length of one measured wrk run
#   ROUNDS=3            interleaved rounds; each runs every target once
#   CONNECTIONS=32      wrk connections of the measured runs (wrk -t1)
#   TARGETS="direct nginx haproxy outrider"   subset and order of round 1
#   WARMUP=2s           wrk warm-up before each measured run
#   HIGH_CONNECTIONS=1000 HIGH_DURATION=5s    the memory run (wrk -t2); 0 skips it
#   OUTRIDER_BIN=       an outrider binary to measure instead of building bin/outrider
#   GOMAXPROCS_OUTRIDER=1 GOMAXPROCS of outrider: one core, like nginx's one
#                       worker and HAProxy's one thread; "default" sets
#                       nothing (outrider's own default is also one core)
#   BASE_PORT=18080     first loopback port tried; free ones are taken
#   RESULTS=bench/results/<timestamp>         where raw outputs go
#
# It installs wrk, nginx and haproxy from Debian's packages when missing,
# runs every server un-daemonized as its child with config generated into a
# temporary directory, and stops all of them on exit or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-32}
TARGETS=${TARGETS:-direct nginx haproxy outrider}
WARMUP=${WARMUP:-2s}
GOMAXPROCS_OUTRIDER=${GOMAXPROCS_OUTRIDER:-1}
HIGH_CONNECTIONS=${HIGH_CONNECTIONS:-1000}
HIGH_DURATION=${HIGH_DURATION:-5s}
BASE_PORT=${BASE_PORT:-18080}
RESULTS=${RESULTS:-bench/results/$(date -u +%Y%m%dT%H%M%SZ)}

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

for knob in ROUNDS CONNECTIONS BASE_PORT; do
	[[ ${!knob} =~ ^[1-9][0-9]*$ ]] || die "$knob=${!knob}: want a positive integer"
done
[[ $GOMAXPROCS_OUTRIDER =~ ^([1-9][0-9]*|default)$ ]] ||
	die "GOMAXPROCS_OUTRIDER=$GOMAXPROCS_OUTRIDER: want a positive integer or default"
[[ $HIGH_CONNECTIONS =~ ^[0-9]+$ ]] || die "HIGH_CONNECTIONS=$HIGH_CONNECTIONS: want an integer (0 skips the memory run)"
for knob in DURATION WARMUP HIGH_DURATION; do
	[[ ${!knob} =~ ^[0-9]+[smh]?$ ]] || die "$knob=${!knob}: want a wrk duration such as 10s, 2m"
done

# --- tools -----------------------------------------------------------------

install_tools() {
	local missing=() tool
	for tool in wrk nginx haproxy; do
		command -v "$tool" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
	done
	if [ ${#missing[@]} -eq 0 ]; then return; fi
	command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
	local sudo=()
	[ "$(id -u)" -eq 0 ] || sudo=(sudo)
	say "installing ${missing[*]} from Debian's packages"
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
	"${sudo[@]}" apt-get update -q || status=$?
	if [ "$status" -eq 0 ]; then
		DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q "${missing[@]}" || status=$?
	fi
	if [ -n "$added" ]; then "${sudo[@]}" rm -f "$policy"; fi
	[ "$status" -eq 0 ] || die "apt-get failed (status $status)"
}

install_tools
export PATH=$PATH:/usr/sbin:/sbin
command -v go >/dev/null 2>&1 || die "go is not installed"

# UNAVAILABLE lists the targets left out, each as "target<TAB>reason".
UNAVAILABLE=()
say "building bin/echo"
make -s echo
if [ -n "${OUTRIDER_BIN:-}" ]; then
	[ -x "$OUTRIDER_BIN" ] || die "OUTRIDER_BIN=$OUTRIDER_BIN is not an executable"
elif [[ " $TARGETS " == *" outrider "* ]]; then
	OUTRIDER_BIN=bin/outrider
	say "building bin/outrider"
	if ! make -s outrider; then
		say "outrider: proxy not available (bin/outrider does not build)"
		UNAVAILABLE+=("outrider	bin/outrider does not build")
	fi
fi

# --- processes -------------------------------------------------------------

# Two benchmarks at once on two cores measure each other: take turns. The
# servers do not inherit the lock (9>&- below).
exec 9>"${TMPDIR:-/tmp}/outrider-bench.lock"
if ! flock -n 9; then
	say "another bench/run.sh is running; waiting for it to finish"
	flock 9
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/outrider-bench.XXXXXX")
# nginx's worker drops to an unprivileged user when run as root; it must be
# able to enter its prefix directory.
chmod 755 "$TMP"
PIDS=()

cleanup() {
	local status=$? pid i
	trap - EXIT INT TERM
	for pid in "${PIDS[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		for i in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$TMP"
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Servers such as HAProxy size their tables from the file limit, and the
# memory run needs two descriptors per connection in each proxy.
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -gt 65536 ]; then hard=65536; fi
ulimit -n "$hard"
[ "$hard" -ge $((HIGH_CONNECTIONS * 2 + 256)) ] ||
	say "warning: ulimit -n is $hard, low for $HIGH_CONNECTIONS connections"

# port_free tells whether nothing accepts on 127.0.0.1:$1.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

next_port=$BASE_PORT
# take_port sets variable $1 to the next free loopback port (not in a
# subshell, so that two calls never hand out the same port).
take_port() {
	while ! port_free "$next_port"; do next_port=$((next_port + 1)); done
	printf -v "$1" '%s' "$next_port"
	next_port=$((next_port + 1))
}

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

# cpu_ticks prints utime+stime summed over the given pids.
cpu_ticks() {
	local pid rest total=0 f
	for pid in "$@"; do
		read -r rest 2>/dev/null <"/proc/$pid/stat" || continue
		# Fields after "comm) " start at 3 (state); utime is 14, stime 15.
		read -r -a f <<<"${rest##*") "}"
		total=$((total + f[11] + f[12]))
	done
	echo "$total"
}

# mem_kb prints the /proc/PID/status field $1 (kB) summed over the pids.
mem_kb() {
	local field=$1 pid total=0 v
	shift
	for pid in "$@"; do
		v=$(awk -v f="$field:" '$1 == f { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
		total=$((total + ${v:-0}))
	done
	echo "$total"
}

mkdir -p "$RESULTS"
take_port APP_PORT
declare -A PORT PROC

say "starting the sample app on 127.0.0.1:$APP_PORT"
bin/echo -listen "127.0.0.1:$APP_PORT" >"$RESULTS/echo.log" 2>&1 9>&- &
APP_PID=$!
PIDS+=("$APP_PID")
wait_http "$APP_PORT" 10 "$APP_PID" || die "the sample app does not answer (see $RESULTS/echo.log)"

start_nginx() {
	local port dir=$TMP/nginx
	take_port port
	mkdir -p "$dir/logs"
	chmod 755 "$dir"
	cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile $hard;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events {
    worker_connections 8192;
}
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    upstream app {
        server 127.0.0.1:$APP_PORT;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
	nginx -p "$dir" -e "$dir/logs/error.log" -c "$dir/nginx.conf" -g 'daemon off;' >"$RESULTS/nginx.log" 2>&1 9>&- &
	NGINX_PID=$!
	PIDS+=("$NGINX_PID")
	PORT[nginx]=$port
	if ! wait_http "$port" 10 "$NGINX_PID"; then
		cat "$dir/logs/error.log" >>"$RESULTS/nginx.log" 2>/dev/null || true
		die "nginx does not answer (see $RESULTS/nginx.log)"
	fi
	# The master plus its one worker.
	PROC[nginx]="$NGINX_PID $(children "$NGINX_PID" | tr '\n' ' ')"
}

start_haproxy() {
	local port dir=$TMP/haproxy
	take_port port
	mkdir -p "$dir"
	cat >"$dir/haproxy.cfg" <<EOF
global
    nbthread 1
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
    default_backend app

backend app
    server app 127.0.0.1:$APP_PORT maxconn 4096
EOF
	haproxy -db -f "$dir/haproxy.cfg" >"$RESULTS/haproxy.log" 2>&1 9>&- &
	HAPROXY_PID=$!
	PIDS+=("$HAPROXY_PID")
	PORT[haproxy]=$port
	wait_http "$port" 10 "$HAPROXY_PID" || die "haproxy does not answer (see $RESULTS/haproxy.log)"
	PROC[haproxy]="$HAPROXY_PID $(children "$HAPROXY_PID" | tr '\n' ' ')"
}

start_outrider() {
	local port metrics admin
	take_port port
	take_port metrics
	take_port admin
	local procs=()
	if [ "$GOMAXPROCS_OUTRIDER" != default ]; then procs=("GOMAXPROCS=$GOMAXPROCS_OUTRIDER"); fi
	# env execs outrider, so $! is outrider's pid.
	env OUTRIDER_REGISTRY=none \
		"OUTRIDER_PROXY_LISTEN=127.0.0.1:$port" \
		"OUTRIDER_APP_ADDR=127.0.0.1:$APP_PORT" \
		"OUTRIDER_METRICS_LISTEN=127.0.0.1:$metrics" \
		"OUTRIDER_ADMIN_LISTEN=127.0.0.1:$admin" \
		OUTRIDER_LOG_LEVEL=warn \
		OUTRIDER_DRAIN_DELAY=0s \
		OUTRIDER_DRAIN_TIMEOUT=2s \
		"${procs[@]}" \
		"$OUTRIDER_BIN" >"$RESULTS/outrider.log" 2>&1 9>&- &
	OUTRIDER_PID=$!
	PIDS+=("$OUTRIDER_PID")
	PORT[outrider]=$port
	if ! wait_http "$port" 10 "$OUTRIDER_PID"; then
		say "outrider: proxy not available (nothing answers on 127.0.0.1:$port; see $RESULTS/outrider.log)"
		UNAVAILABLE+=("outrider	nothing answers on its proxy port")
		# Out of the way of the others' measurements.
		kill -TERM "$OUTRIDER_PID" 2>/dev/null || true
		return
	fi
	PROC[outrider]=$OUTRIDER_PID
}

# unavailable tells whether target $1 has been left out.
unavailable() {
	local u
	for u in "${UNAVAILABLE[@]}"; do
		if [ "${u%%	*}" = "$1" ]; then return 0; fi
	done
	return 1
}

ACTIVE=()
for target in $TARGETS; do
	case $target in
	direct)
		PORT[direct]=$APP_PORT
		PROC[direct]=
		;;
	nginx | haproxy | outrider)
		if unavailable "$target"; then continue; fi
		say "starting $target"
		"start_$target"
		;;
	*) die "unknown target $target (want direct, nginx, haproxy, outrider)" ;;
	esac
	if unavailable "$target"; then continue; fi
	ACTIVE+=("$target")
done
[ ${#ACTIVE[@]} -gt 0 ] || die "no target answers"

# --- measured rounds --------------------------------------------------------

# run_wrk FILE ARGS... runs wrk with its output in FILE. It runs in the
# background under wait so that Ctrl-C reaches the trap at once: bash holds
# a trap back while a foreground child that handles SIGINT itself (as wrk
# does) is running, and then forgets it.
run_wrk() {
	local out=$1 pid status=0
	shift
	wrk "$@" >"$out" 2>&1 9>&- &
	pid=$!
	PIDS+=("$pid")
	wait "$pid" || status=$?
	unset 'PIDS[-1]'
	return "$status"
}

{
	echo "date	$(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "clk_tck	$(getconf CLK_TCK)"
	echo "cpus	$(nproc)"
	echo "duration	$DURATION"
	echo "rounds	$ROUNDS"
	echo "connections	$CONNECTIONS"
	echo "high_connections	$HIGH_CONNECTIONS"
	echo "wrk	$(wrk -v 2>&1 | awk 'NR == 1 { print $1, $2 }' || true)"
	echo "nginx	$(nginx -v 2>&1 | sed 's/^nginx version: //' || true)"
	echo "haproxy	$(haproxy -v 2>&1 | awk 'NR == 1 { print $1, $3 }' || true)"
	echo "outrider_gomaxprocs	$GOMAXPROCS_OUTRIDER"
	echo "outrider	$("${OUTRIDER_BIN:-bin/outrider}" version 2>&1 | awk 'NR == 1 { print $2 }' || true)"
	echo "commit	$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
	echo "load_start	$(cut -d' ' -f1 /proc/loadavg)"
	for u in "${UNAVAILABLE[@]}"; do
		echo "unavailable	$u"
	done
} >"$RESULTS/info.tsv"

printf 'target\tround\twrk_file\tproxy_ticks\tapp_ticks\n' >"$RESULTS/runs.tsv"
n=${#ACTIVE[@]}
for round in $(seq "$ROUNDS"); do
	for i in $(seq 0 $((n - 1))); do
		target=${ACTIVE[$(((i + round - 1) % n))]}
		url=http://127.0.0.1:${PORT[$target]}/
		say "round $round/$ROUNDS: $target"
		run_wrk /dev/null -t1 -c"$CONNECTIONS" -d"$WARMUP" "$url" || say "warm-up of $target failed"
		# shellcheck disable=SC2086 # PROC holds a list of pids.
		proxy0=$(cpu_ticks ${PROC[$target]})
		app0=$(cpu_ticks "$APP_PID")
		file=round$round-$target.txt
		run_wrk "$RESULTS/$file" -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "$url" ||
			say "wrk failed for $target (see $RESULTS/$file)"
		# shellcheck disable=SC2086
		proxy1=$(cpu_ticks ${PROC[$target]})
		app1=$(cpu_ticks "$APP_PID")
		printf '%s\t%s\t%s\t%s\t%s\n' "$target" "$round" "$file" \
			$((proxy1 - proxy0)) $((app1 - app0)) >>"$RESULTS/runs.tsv"
	done
done

# --- memory ---------------------------------------------------------------

printf 'target\tpeak_rss_kb\tload_rss_kb\tload_hwm_kb\twrk_file\n' >"$RESULTS/memory.tsv"
for target in "${ACTIVE[@]}"; do
	pids=${PROC[$target]}
	if [ "$target" = direct ]; then pids=$APP_PID; fi
	# shellcheck disable=SC2086
	peak=$(mem_kb VmHWM $pids)
	if [ "$HIGH_CONNECTIONS" -eq 0 ]; then
		printf '%s\t%s\t-\t-\t-\n' "$target" "$peak" >>"$RESULTS/memory.tsv"
		continue
	fi
	say "memory at $HIGH_CONNECTIONS connections: $target"
	file=high-$target.txt
	wrk -t2 -c"$HIGH_CONNECTIONS" -d"$HIGH_DURATION" --latency "http://127.0.0.1:${PORT[$target]}/" >"$RESULTS/$file" 2>&1 9>&- &
	wrk_pid=$!
	PIDS+=("$wrk_pid")
	# Sample while the connections are open; keep the largest figure.
	load=0
	while kill -0 "$wrk_pid" 2>/dev/null; do
		sleep 0.5
		# shellcheck disable=SC2086
		rss=$(mem_kb VmRSS $pids)
		if [ "$rss" -gt "$load" ]; then load=$rss; fi
	done
	wait "$wrk_pid" || say "wrk at $HIGH_CONNECTIONS connections failed for $target"
	unset 'PIDS[-1]'
	# shellcheck disable=SC2086
	hwm=$(mem_kb VmHWM $pids)
	printf '%s\t%s\t%s\t%s\t%s\n' "$target" "$peak" "$load" "$hwm" "$file" >>"$RESULTS/memory.tsv"
done

# --- summary ----------------------------------------------------------------

printf 'load_end\t%s\n' "$(cut -d' ' -f1 /proc/loadavg)" >>"$RESULTS/info.tsv"

go run ./bench/cmd/benchsummary -dir "$RESULTS" | tee "$RESULTS/summary.txt"
say "raw outputs and summary in $RESULTS"
