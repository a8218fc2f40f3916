#!/usr/bin/env bash
# Measures outrider's resident memory over repeated bursts of client
# connections, the way a long-lived sidecar meets them: each build is
# started alone behind the sample app, pinned as bench/compare.sh pins it,
# and sent BURSTS runs of wrk with CONNECTIONS new connections each,
# PAUSE apart, while its VmRSS is sampled every quarter second. A single
# run (bench/run.sh's conns1000 row) shows the first bursts; the heap the
# collector lets grow between collections shows only after several. The
# builds take turns round by round. See docs/benchmarks.md.
#
# Usage: bash bench/bursts.sh BINARY [BINARY...]
#   (a wrapper script that sets an environment variable and execs
#   bin/outrider measures a setting, e.g. GOGC)
#
# Knobs (environment):
#   ROUNDS=3            rounds; each runs every build once, in turn
#   BURSTS=6            bursts per build and round
#   CONNECTIONS=1000    wrk connections per burst (wrk -t1)
#   DURATION=3s         length of one burst
#   PAUSE=3             seconds between bursts
#   GOMAXPROCS=1        the builds' GOMAXPROCS
#   CPUS=               CPUs to pin the builds to (default: the last
#                       GOMAXPROCS CPUs)
#   BASE_PORT=19380     first loopback port tried
#
# It needs wrk (Debian package wrk) and taskset (util-linux).
set -euo pipefail
cd "$(dirname "$0")/.."

die() { printf 'bursts: %s\n' "$*" >&2; exit 1; }

[ $# -ge 1 ] || die "usage: bash bench/bursts.sh BINARY [BINARY...]"
BINS=("$@")
for b in "${BINS[@]}"; do
	[ -x "$b" ] || die "$b is not an executable outrider build"
done
ROUNDS=${ROUNDS:-3}
BURSTS=${BURSTS:-6}
CONNECTIONS=${CONNECTIONS:-1000}
DURATION=${DURATION:-3s}
PAUSE=${PAUSE:-3}
GOMAXPROCS=${GOMAXPROCS:-1}
BASE_PORT=${BASE_PORT:-19380}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS=$ROUNDS: want a positive integer"
[[ $BURSTS =~ ^[1-9][0-9]*$ ]] || die "BURSTS=$BURSTS: want a positive integer"
[[ $CONNECTIONS =~ ^[1-9][0-9]*$ ]] || die "CONNECTIONS=$CONNECTIONS: want a positive integer"
[[ $DURATION =~ ^[1-9][0-9]*s$ ]] || die "DURATION=$DURATION: want seconds, such as 3s"
[[ $PAUSE =~ ^[0-9]+$ ]] || die "PAUSE=$PAUSE: want whole seconds"
[[ $GOMAXPROCS =~ ^[1-9][0-9]*$ ]] || die "GOMAXPROCS=$GOMAXPROCS: want a positive integer"
for t in wrk taskset; do
	command -v "$t" >/dev/null || die "$t is not installed"
done
[ -x bin/echo ] || make -s echo

# shellcheck source=bench/procs.sh
. bench/procs.sh
pin_cpus
start_scratch bursts
next_port=$BASE_PORT
start_app
outrider_ports
url="http://127.0.0.1:$port/"

printf '# GET /, %s bursts of wrk -t1 -c%s -d%s, %s s apart, GOMAXPROCS=%s on CPUs %s, %s rounds\n' \
	"$BURSTS" "$CONNECTIONS" "$DURATION" "$PAUSE" "$GOMAXPROCS" "$CPUS" "$ROUNDS"
printf '# load average (1 min) at the start: %s\n' "$(cut -d' ' -f1 /proc/loadavg)"
printf '# peak VmRSS (MB) during each burst\n'
printf '%-5s %-3s %s\n' round bin "bursts 1..$BURSTS"
: >"$TMP/last"
for round in $(seq "$ROUNDS"); do
	# Rotate the order, so no build always runs first.
	order=()
	for i in "${!BINS[@]}"; do order+=($(((i + round - 1) % ${#BINS[@]}))); done
	for i in "${order[@]}"; do
		env "${OUTRIDER_ENV[@]}" "GOMAXPROCS=$GOMAXPROCS" \
			taskset -c "$CPUS" "${BINS[$i]}" >"$TMP/outrider-$i.log" 2>&1 &
		pid=$!
		PIDS+=("$pid")
		wait_port "$port"
		peaks=()
		for _ in $(seq "$BURSTS"); do
			wrk -t1 -c"$CONNECTIONS" -d"$DURATION" "$url" >"$TMP/wrk.out" 2>&1 &
			w=$!
			peak=0
			while kill -0 "$w" 2>/dev/null; do
				kill -0 "$pid" 2>/dev/null || die "${BINS[$i]} exited during a burst: $(tail -5 "$TMP/outrider-$i.log")"
				rss=$(rss_kb "$pid")
				[ "$rss" -le "$peak" ] || peak=$rss
				sleep 0.25
			done
			wait "$w" || die "wrk failed against ${BINS[$i]}: $(cat "$TMP/wrk.out")"
			peaks+=("$(awk -v k="$peak" 'BEGIN { printf "%.1f", k / 1024 }')")
			sleep "$PAUSE"
		done
		kill -TERM "$pid"
		wait "$pid" 2>/dev/null || true
		printf '%-5s %-3s %s\n' "$round" "$((i + 1))" "${peaks[*]}"
		printf '%s %s\n' "$i" "${peaks[-1]}" >>"$TMP/last"
	done
done
printf '# load average (1 min) at the end: %s\n' "$(cut -d' ' -f1 /proc/loadavg)"
for i in "${!BINS[@]}"; do
	sort -n -k2 "$TMP/last" | awk -v i="$i" -v bin="${BINS[$i]}" '$1 == i { v[++n] = $2 }
		END { printf "median peak of the last burst, %s: %.1f MB (%.1f-%.1f)\n", bin, v[int((n + 1) / 2)], v[1], v[n] }'
done
