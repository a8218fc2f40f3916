#!/usr/bin/env bash
# Compares two outrider builds on one request kind, interleaved: round by
# round, each build is started alone behind the same sample app, pinned to
# the same CPUs, warmed up and loaded with wrk, and its CPU time per
# request (user + system, from /proc/PID/stat), throughput and p99 latency
# are recorded. Measuring the builds in alternation, minutes apart at most,
# keeps the machine's changing load out of the comparison better than two
# separate runs of bench/run.sh. See docs/benchmarks.md.
#
# Usage: bash bench/compare.sh OLD_BINARY NEW_BINARY
#
# Knobs (environment):
#   ROUNDS=5            rounds; each runs both builds once, in turn
#   DURATION=4s         length of one measured wrk run (after a 1 s warm-up)
#   CONNECTIONS=32      wrk connections (wrk -t1)
#   URLPATH=/           the request path
#   HEADER=             one more request header, e.g. 'Connection: close'
#   GOMAXPROCS=1        the builds' GOMAXPROCS
#   CPUS=               CPUs to pin the builds to with taskset (default: the
#                       last GOMAXPROCS CPUs, as bench/run.sh does)
#   BASE_PORT=19280     first loopback port tried
#
# It needs wrk (Debian package wrk) and taskset (util-linux).
set -euo pipefail
cd "$(dirname "$0")/.."

die() { printf 'compare: %s\n' "$*" >&2; exit 1; }

[ $# -eq 2 ] || die "usage: bash bench/compare.sh OLD_BINARY NEW_BINARY"
BINS=("$1" "$2")
for b in "${BINS[@]}"; do
	[ -x "$b" ] || die "$b is not an executable outrider build"
done
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-4s}
CONNECTIONS=${CONNECTIONS:-32}
URLPATH=${URLPATH:-/}
HEADER=${HEADER:-}
GOMAXPROCS=${GOMAXPROCS:-1}
BASE_PORT=${BASE_PORT:-19280}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS=$ROUNDS: want a positive integer"
[[ $DURATION =~ ^[1-9][0-9]*s$ ]] || die "DURATION=$DURATION: want seconds, such as 4s"
[[ $CONNECTIONS =~ ^[1-9][0-9]*$ ]] || die "CONNECTIONS=$CONNECTIONS: want a positive integer"
[[ $GOMAXPROCS =~ ^[1-9][0-9]*$ ]] || die "GOMAXPROCS=$GOMAXPROCS: want a positive integer"
for t in wrk taskset; do
	command -v "$t" >/dev/null || die "$t is not installed"
done
[ -x bin/echo ] || make -s echo
clk_tck=$(getconf CLK_TCK)

# shellcheck source=bench/procs.sh
. bench/procs.sh
pin_cpus
start_scratch compare
next_port=$BASE_PORT
start_app
outrider_ports

wrkopts=(-t1 -c"$CONNECTIONS")
[ -z "$HEADER" ] || wrkopts+=(-H "$HEADER")
url="http://127.0.0.1:$port$URLPATH"

printf '# GET %s%s, wrk -t1 -c%s -d%s, GOMAXPROCS=%s on CPUs %s, %s rounds\n' \
	"$URLPATH" "${HEADER:+, $HEADER}" "$CONNECTIONS" "$DURATION" "$GOMAXPROCS" "$CPUS" "$ROUNDS"
printf '# load average (1 min) at the start: %s\n' "$(cut -d' ' -f1 /proc/loadavg)"
printf '%-5s %-5s %10s %16s %10s\n' round build "req/s" "CPU µs/request" "p99 ms"
: >"$TMP/results"
for round in $(seq "$ROUNDS"); do
	# Rotate the order, so neither build always runs first.
	order=(0 1)
	[ $((round % 2)) -eq 1 ] || order=(1 0)
	for i in "${order[@]}"; do
		env "${OUTRIDER_ENV[@]}" \
			"GOMAXPROCS=$GOMAXPROCS" \
			taskset -c "$CPUS" "${BINS[$i]}" >"$TMP/outrider-$i.log" 2>&1 &
		pid=$!
		PIDS+=("$pid")
		wait_port "$port"
		wrk "${wrkopts[@]}" -d1s "$url" >/dev/null
		t0=$(cpu_ticks "$pid")
		wrk "${wrkopts[@]}" --latency -d"$DURATION" "$url" >"$TMP/wrk.out"
		t1=$(cpu_ticks "$pid")
		kill -TERM "$pid"
		wait "$pid" 2>/dev/null || true
		requests=$(awk '/requests in/ { print $1 }' "$TMP/wrk.out")
		rps=$(awk '/Requests\/sec/ { print $2 }' "$TMP/wrk.out")
		[ "${requests:-0}" -gt 0 ] || die "no request answered by ${BINS[$i]}"
		if grep -q -E 'Socket errors|Non-2xx' "$TMP/wrk.out"; then
			printf 'compare: warning: errors in the run of %s:\n' "${BINS[$i]}" >&2
			grep -E 'Socket errors|Non-2xx' "$TMP/wrk.out" >&2
		fi
		# wrk prints the 99th percentile as, say, 412.00us, 1.20ms or 1.02s.
		p99=$(awk '$1 == "99%" {
			v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v)
			printf "%.3f", v * (u == "us" ? 0.001 : u == "s" ? 1000 : u == "m" ? 60000 : 1) }' "$TMP/wrk.out")
		us=$(awk -v t=$((t1 - t0)) -v hz="$clk_tck" -v n="$requests" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
		name=old
		[ "$i" -eq 0 ] || name=new
		printf '%-5s %-5s %10s %16s %10s\n' "$round" "$name" "$rps" "$us" "$p99"
		printf '%s %s %s %s\n' "$name" "$rps" "$us" "$p99" >>"$TMP/results"
	done
done
printf '# load average (1 min) at the end: %s\n' "$(cut -d' ' -f1 /proc/loadavg)"
# Medians of each build, and new over old.
awk '
	function median(a, n,   i, j, t) {
		for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
		return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
	}
	{ n[$1]++; rps[$1, n[$1]] = $2; us[$1, n[$1]] = $3; lat[$1, n[$1]] = $4 }
	END {
		for (b in n) {
			for (i = 1; i <= n[b]; i++) { r[i] = rps[b, i]; u[i] = us[b, i]; l[i] = lat[b, i] }
			mr[b] = median(r, n[b]); mu[b] = median(u, n[b]); ml[b] = median(l, n[b])
		}
		printf "median  old: %.0f req/s, %.1f µs/request, p99 %.2f ms; new: %.0f req/s, %.1f µs/request, p99 %.2f ms\n", mr["old"], mu["old"], ml["old"], mr["new"], mu["new"], ml["new"]
		printf "new/old throughput %.2fx, CPU per request %.2fx, p99 %.2fx\n", mr["new"] / mr["old"], mu["new"] / mu["old"], ml["new"] / ml["old"]
	}' "$TMP/results"
