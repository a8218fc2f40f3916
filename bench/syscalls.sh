#!/usr/bin/env bash
# Counts the system calls a proxy makes per request, by kind: a figure that,
# unlike throughput, does not depend on how busy the machine is. The sample
# app (bin/echo) runs behind the proxy on 127.0.0.1; wrk sends small
# keep-alive requests for DURATION while the proxy's system calls are
# counted, and the counts are divided by the requests the proxy forwarded
# (outrider: outrider_http_requests_total on its /metrics; nginx: wrk's
# count). See docs/benchmarks.md.
#
# Knobs (environment):
#   TARGET=outrider     outrider or nginx (WORKERS workers, upstream keepalive)
#   TOOL=perf           perf (syscall tracepoints, does not slow the proxy)
#                       or strace (strace -f -c; slows every call, so the
#                       proxy finds data waiting more often than it would)
#                       or callgrind (outrider only: instructions per request,
#                       under valgrind, for REQUESTS requests sent by h2load)
#                       or threads (no system calls counted: each thread's
#                       CPU time and context switches per request, from
#                       /proc; in outrider, Go's scheduler monitor (sysmon)
#                       is the thread that switches most and does no I/O)
#                       or wake (perf, for 1 s in the middle of the run:
#                       how long after a wait that blocked returns the
#                       proxy's thread enters its first read and its first
#                       write, in µs; the part of the latency a proxy adds
#                       that is its own, and not the kernel's wake-up)
#                       or scrape (outrider only, no system calls counted:
#                       SCRAPES scrapes of its /metrics, one every 0.2 s,
#                       during the load, and how long each took; the rest of
#                       the agent must not wait for a busy proxy, and a probe
#                       of the app waits as a scrape does)
#   DURATION=5s         length of the counted wrk run
#   SCRAPES=40          scrapes of TOOL=scrape (DURATION is made long enough)
#   REQUESTS=5000       requests of the callgrind run
#   CALLGRIND_OUT=      a file to keep the callgrind profile in
#   CONNECTIONS=32      wrk connections (wrk -t1)
#   RATE=               requests per second: send them at that fixed rate
#                       with bin/fixedrate (keep-alive, CONNECTIONS
#                       connections) instead of as fast as wrk can; the
#                       calls of a proxy that waits for each request, as in
#                       the matrix's fixedrate row (RATE=5000 CONNECTIONS=50)
#   URLPATH=/           the request path (/bytes?n=16384 for 16 KiB answers;
#                       /echo when BODY_BYTES is set)
#   BODY_BYTES=0        POST a body of that many bytes (65536: the upload row;
#                       bin/echo's /echo streams it back)
#   HEADER=             one more request header, e.g. 'Connection: close'
#                       for a new connection per request
#   GOMAXPROCS=1        outrider's GOMAXPROCS (its default)
#   WORKERS=1           nginx's worker processes (2 for the two-core rows)
#   OUTRIDER_BIN=bin/outrider   the outrider binary to measure
#   BASE_PORT=19080     first loopback port tried
#
# It needs wrk and perf or strace (Debian packages wrk, linux-perf, strace)
# and reads syscall tracepoints, so it runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=${TARGET:-outrider}
TOOL=${TOOL:-perf}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-32}
BODY_BYTES=${BODY_BYTES:-0}
HEADER=${HEADER:-}
if [ "$BODY_BYTES" != 0 ]; then URLPATH=${URLPATH:-/echo}; else URLPATH=${URLPATH:-/}; fi
GOMAXPROCS=${GOMAXPROCS:-1}
WORKERS=${WORKERS:-1}
OUTRIDER_BIN=${OUTRIDER_BIN:-bin/outrider}
BASE_PORT=${BASE_PORT:-19080}

die() { printf 'syscalls: %s\n' "$*" >&2; exit 1; }

case $TARGET in outrider | nginx) ;; *) die "TARGET=$TARGET: want outrider or nginx" ;; esac
case $TOOL in perf | strace | callgrind | threads | wake | scrape) ;; *) die "TOOL=$TOOL: want perf, strace, callgrind, threads, wake or scrape" ;; esac
[ "$TOOL" != callgrind ] || [ "$TARGET" = outrider ] || die "TOOL=callgrind measures outrider only"
[ "$TOOL" != scrape ] || [ "$TARGET" = outrider ] || die "TOOL=scrape measures outrider only"
SCRAPES=${SCRAPES:-40}
REQUESTS=${REQUESTS:-5000}
RATE=${RATE:-}
for knob in REQUESTS CONNECTIONS WORKERS GOMAXPROCS SCRAPES; do
	[[ ${!knob} =~ ^[1-9][0-9]*$ ]] || die "$knob=${!knob}: want a positive integer"
done
if [ -n "$RATE" ]; then
	[[ $RATE =~ ^[1-9][0-9]*$ ]] || die "RATE=$RATE: want requests per second, a positive integer"
	[ "$TOOL" != callgrind ] || die "RATE is for TOOL=perf, strace, threads or wake"
	[ "$BODY_BYTES" = 0 ] && [ -z "$HEADER" ] || die "RATE sends GET $URLPATH only: leave BODY_BYTES and HEADER unset"
fi
[[ $DURATION =~ ^[1-9][0-9]*s$ ]] || die "DURATION=$DURATION: want seconds, such as 5s"
[ "$TOOL" != wake ] || [ "${DURATION%s}" -ge 3 ] || die "DURATION=$DURATION: TOOL=wake traces 1 s in the middle of the run; want 3s or more"
[[ $BODY_BYTES =~ ^[0-9]+$ ]] || die "BODY_BYTES=$BODY_BYTES: want a number of bytes"
tools=(wrk "$TOOL")
[ "$TOOL" != callgrind ] || tools=(h2load valgrind callgrind_control)
[ "$TOOL" != threads ] || tools=(wrk)
[ "$TOOL" != scrape ] || tools=(wrk curl)
[ "$TOOL" != wake ] || tools=(wrk perf)
if [ -n "$RATE" ]; then
	tools=("${tools[@]:1}") # no wrk
fi
for t in "${tools[@]}"; do
	command -v "$t" >/dev/null || die "$t is not installed"
done
[ "$TARGET" != nginx ] || command -v nginx >/dev/null || die "nginx is not installed"
[ -x bin/echo ] || make -s echo
[ "$TARGET" != outrider ] || [ -x "$OUTRIDER_BIN" ] || make -s outrider
if [ -n "$RATE" ] && [ ! -x bin/fixedrate ]; then
	(cd bench && go build -o ../bin/fixedrate ./cmd/fixedrate) || die "bench/cmd/fixedrate does not build"
fi

# shellcheck source=bench/procs.sh
. bench/procs.sh
start_scratch syscalls
next_port=$BASE_PORT
start_app

if [ "$TARGET" = outrider ]; then
	outrider_ports
	VALGRIND=
	# Go's asynchronous preemption signals are noise under valgrind.
	[ "$TOOL" != callgrind ] || VALGRIND="env GODEBUG=asyncpreemptoff=1 valgrind --tool=callgrind"
	env "${OUTRIDER_ENV[@]}" \
		"GOMAXPROCS=$GOMAXPROCS" \
		${VALGRIND:+$VALGRIND "--callgrind-out-file=$TMP/callgrind.out"} \
		"$OUTRIDER_BIN" >"$TMP/outrider.log" 2>&1 &
	PIDS+=($!)
	procs=$!
else
	take_port port
	nginx_conf "$TMP" "$port" "$app" "$WORKERS" "$(ulimit -n)"
	nginx -p "$TMP" -e "$TMP/logs/error.log" -c "$TMP/nginx.conf" -g 'daemon off;' >"$TMP/nginx.log" 2>&1 &
	PIDS+=($!)
fi
wait_port "$port"
if [ "$TARGET" = nginx ]; then
	# The workers, where the requests are served.
	procs=$(pgrep -d, -P "${PIDS[1]}")
fi

# requests_total sums outrider_http_requests_total over its labels.
requests_total() {
	curl -fsS "http://127.0.0.1:$metrics/metrics" |
		awk '/^outrider_http_requests_total[{ ]/ { n += $NF } END { printf "%d\n", n }'
}

url="http://127.0.0.1:$port$URLPATH"
# The request's options, for wrk and for h2load.
wrkopts=() h2opts=()
if [ -n "$HEADER" ]; then
	wrkopts+=(-H "$HEADER")
	h2opts+=(-H "$HEADER")
fi
if [ "$BODY_BYTES" != 0 ]; then
	head -c "$BODY_BYTES" /dev/zero | tr '\0' x >"$TMP/body"
	cat >"$TMP/body.lua" <<EOF
wrk.method = "POST"
wrk.body = string.rep("x", $BODY_BYTES)
wrk.headers["Content-Type"] = "application/octet-stream"
EOF
	wrkopts+=(-s "$TMP/body.lua")
	h2opts+=(-d "$TMP/body" -H 'Content-Type: application/octet-stream')
fi
if [ "$TOOL" = callgrind ]; then
	h2load --h1 -n 1000 -c "$CONNECTIONS" "${h2opts[@]}" "$url" >/dev/null
	before=$(requests_total)
	callgrind_control -z "${PIDS[1]}" >/dev/null 2>&1
	h2load --h1 -n "$REQUESTS" -c "$CONNECTIONS" "${h2opts[@]}" "$url" >"$TMP/h2load.out"
	callgrind_control -d "${PIDS[1]}" >/dev/null 2>&1
	requests=$(($(requests_total) - before))
	ir=$(cat "$TMP"/callgrind.out.* | awk '/^totals:/ { n += $2 } END { print n + 0 }')
	printf '# %s, callgrind, GOMAXPROCS=%s, h2load --h1 -n %s -c %s %s\n' "$TARGET" "$GOMAXPROCS" "$REQUESTS" "$CONNECTIONS" "$URLPATH"
	printf '# requests %d\n' "$requests"
	printf '%d instructions per request (user space, every thread)\n' $((ir / requests))
	if [ -n "${CALLGRIND_OUT:-}" ]; then
		cat "$TMP"/callgrind.out.* >"$CALLGRIND_OUT"
		printf '# the profile is in %s: callgrind_annotate %s (an OUTRIDER_BIN built without -s -w has symbols)\n' "$CALLGRIND_OUT" "$CALLGRIND_OUT"
	fi
	exit 0
fi
# load sends requests for $1 (such as 5s), with wrk or, with RATE, at
# that rate with bin/fixedrate; its output goes to $2.
load() {
	if [ -n "$RATE" ]; then
		bin/fixedrate -url "$url" -rate "$RATE" -connections "$CONNECTIONS" -duration "$1" -log "$TMP/fixedrate.log" >"$2"
	else
		wrk -t1 -c"$CONNECTIONS" -d"$1" "${wrkopts[@]}" "$url" >"$2"
	fi
}
# A warm-up: connections to the app made, buffers pooled, stacks grown.
load 1s /dev/null

before=0
[ "$TARGET" != outrider ] || before=$(requests_total)
secs=${DURATION%s}
counted=$TMP/counts
# thread_times prints, per thread of the measured processes, its id, CPU
# clock ticks (user + system) and voluntary and involuntary context
# switches.
thread_times() {
	local pid t
	for pid in ${procs//,/ }; do
		for t in /proc/"$pid"/task/*; do
			printf '%s %s %s\n' "${t##*/}" "$(awk '{ print $14 + $15 }' "$t/stat")" \
				"$(awk '/^(non)?voluntary_ctxt_switches/ { printf "%s ", $2 }' "$t/status")"
		done
	done | sort
}
if [ "$TOOL" = scrape ]; then
	# The load lasts the scrapes and a second more.
	secs=$((SCRAPES / 5 + 2))
	DURATION=${secs}s
	(
		sleep 0.5
		for _ in $(seq "$SCRAPES"); do
			curl -fsS -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$metrics/metrics" || echo failed
			sleep 0.2
		done >"$TMP/scrapes"
	) &
elif [ "$TOOL" = threads ]; then
	thread_times >"$TMP/threads.before"
	counter=
elif [ "$TOOL" = wake ]; then
	# The waits, and the reads and writes after them, of every thread, for
	# one second once the load has settled.
	(
		sleep $(((secs + 1) / 2))
		perf record -q -o "$TMP/wake.data" -p "$procs" \
			-e syscalls:sys_enter_epoll_wait -e syscalls:sys_exit_epoll_wait \
			-e syscalls:sys_enter_epoll_pwait -e syscalls:sys_exit_epoll_pwait \
			-e syscalls:sys_enter_read -e syscalls:sys_enter_recvfrom \
			-e syscalls:sys_enter_write -e syscalls:sys_enter_writev -e syscalls:sys_enter_sendto \
			-- sleep 1 >/dev/null 2>&1
	) &
elif [ "$TOOL" = perf ]; then
	perf stat -x, -o "$counted" -p "$procs" \
		-e 'syscalls:sys_enter_*' \
		-e syscalls:sys_exit_read --filter 'ret == -11' \
		-e syscalls:sys_exit_recvfrom --filter 'ret == -11' \
		-- sleep $((secs + 1)) &
else
	attach=()
	for pid in ${procs//,/ }; do attach+=(-p "$pid"); done
	strace -f -c -o "$counted" "${attach[@]}" &
fi
counter=$!
sleep 0.5
load "$DURATION" "$TMP/wrk.out"
if [ "$TOOL" = strace ]; then
	kill -INT "$counter"
fi
if [ "$TOOL" = threads ]; then
	thread_times >"$TMP/threads.after"
else
	wait "$counter" || true
fi

if [ "$TARGET" = outrider ]; then
	requests=$(($(requests_total) - before))
else
	requests=$(awk '/requests in/ { print $1 } /^requests:/ { print $6 }' "$TMP/wrk.out")
fi
[ "$requests" -gt 0 ] || die "no request was counted"

request=$URLPATH
[ "$BODY_BYTES" = 0 ] || request="POST $URLPATH, $BODY_BYTES-byte body"
[ -z "$HEADER" ] || request="$request, $HEADER"
procs_knob="GOMAXPROCS=$GOMAXPROCS"
[ "$TARGET" != nginx ] || procs_knob="WORKERS=$WORKERS"
if [ -n "$RATE" ]; then
	printf '# %s, %s, %s, fixedrate -rate %s -connections %s -duration %s %s\n' "$TARGET" "$TOOL" "$procs_knob" "$RATE" "$CONNECTIONS" "$DURATION" "$request"
	printf '# requests %d, fixedrate: %s\n' "$requests" "$(awk '/^rate:/ { print $2 " req/s" }' "$TMP/wrk.out")"
else
	printf '# %s, %s, %s, wrk -t1 -c%s -d%s %s\n' "$TARGET" "$TOOL" "$procs_knob" "$CONNECTIONS" "$DURATION" "$request"
	printf '# requests %d, wrk: %s\n' "$requests" "$(awk '/Requests\/sec/ { print $2 " req/s" }' "$TMP/wrk.out")"
fi
if [ "$TOOL" = scrape ]; then
	! grep -q failed "$TMP/scrapes" || die "$(grep -c failed "$TMP/scrapes") of $SCRAPES scrapes failed"
	sort -g "$TMP/scrapes" | awk '
		{ t[NR] = $1 * 1000 }
		END { printf "%d scrapes of /metrics under load, ms: median %.1f, p90 %.1f, max %.1f\n", NR, t[int((NR + 1) / 2)], t[int(NR * 0.9 + 0.5)], t[NR] }'
	exit 0
fi
if [ "$TOOL" = wake ]; then
	# A wake is a wait (epoll_wait or epoll_pwait) that returned events at
	# least 20 µs after it was entered, so it blocked; Go's non-blocking
	# looks return within a few µs. From its return, the time to the same
	# thread's next read and next write.
	perf script -i "$TMP/wake.data" --ns -F tid,time,event,trace 2>/dev/null |
		awk '
			{
				tid = $1; t = $2 + 0; ev = $3; sub(/:$/, "", ev); sub(/^syscalls:/, "", ev)
			}
			ev ~ /^sys_enter_epoll_p?wait$/ { entered[tid] = t; next }
			ev ~ /^sys_exit_epoll_p?wait$/ {
				ret = number($NF)
				if ((tid in entered) && ret > 0 && t - entered[tid] >= 20e-6) { woke[tid] = t; delete readAt[tid] }
				delete entered[tid]
				next
			}
			ev ~ /^sys_enter_(read|recvfrom)$/ && (tid in woke) && !(tid in readAt) { readAt[tid] = t; next }
			ev ~ /^sys_enter_(write|writev|sendto)$/ && (tid in woke) {
				if (tid in readAt) {
					n++; dr = (readAt[tid] - woke[tid]) * 1e6; dw = (t - woke[tid]) * 1e6
					sr += dr; sw += dw; rh[int(dr * 10)]++; wh[int(dw * 10)]++
					if (dw > top) top = dw
				}
				delete woke[tid]; delete readAt[tid]
			}
			# perf prints a return value in hex (0x3); a negative one, an
			# error, as 16 digits from 0x8000000000000000 up. Not every awk
			# reads hex as a number.
			function number(s,   i, v) {
				if (s !~ /^0x[0-9a-f]+$/) return s + 0
				if (length(s) == 18 && substr(s, 3, 1) ~ /[89a-f]/) return -1
				for (i = 3; i <= length(s); i++) v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
				return v
			}
			# median of the n times counted in h, in tenths of a µs, up to top µs
			function median(h,   b, seen) {
				for (b = 0; b <= top * 10; b++) if ((seen += h[b]) >= n / 2) return b / 10
			}
			END {
				if (n == 0) { print "no wake followed by a read and a write was traced"; exit 1 }
				printf "%d wakes in 1 s, µs from the wait'"'"'s return: first read median %.1f (mean %.1f), first write median %.1f (mean %.1f)\n", n, median(rh), sr / n, median(wh), sw / n
			}'
	exit 0
fi
if [ "$TOOL" = threads ]; then
	# Threads started during the run count from zero.
	printf '%8s %18s %22s %24s\n' thread "CPU µs per request" "voluntary switches" "involuntary switches"
	join -a2 -e0 -o 0,1.2,1.3,1.4,2.2,2.3,2.4 "$TMP/threads.before" "$TMP/threads.after" |
		awk -v n="$requests" -v hz="$(getconf CLK_TCK)" '
			{
				cpu = ($5 - $2) / hz * 1e6 / n; v = ($6 - $3) / n; nv = ($7 - $4) / n
				if (cpu == 0 && v < 0.01) next
				tc += cpu; tv += v; tn += nv
				printf "%8s %18.2f %22.3f %24.3f\n", $1, cpu, v, nv
			}
			END { printf "%8s %18.2f %22.3f %24.3f\n", "total", tc, tv, tn }'
	exit 0
fi
printf '%11s  %s\n' "per request" "call"
if [ "$TOOL" = perf ]; then
	# CSV lines: count,,event,...; the filtered exit events are the calls
	# that found nothing (EAGAIN). outrider reads with read; its recvfrom is
	# the peek (MSG_PEEK) that checks an app connection before reusing it,
	# which finds nothing when the connection is clean. nginx reads with
	# recvfrom.
	awk -F, -v n="$requests" '
		$3 ~ /^syscalls:sys_exit_/ {
			if ($1 ~ /^[0-9]+$/) {
				name = $3; sub(/^syscalls:sys_exit_/, "", name)
				printf "%11.2f  %s\n", $1 / n, "of which " name " found nothing (EAGAIN)"
			}
			next
		}
		$3 ~ /^syscalls:sys_enter_/ && $1 ~ /^[0-9]+$/ && $1 > 0 {
			name = $3; sub(/^syscalls:sys_enter_/, "", name)
			total += $1
			printf "%11.2f  %s\n", $1 / n, name
		}
		END { printf "%11.2f  %s\n", total / n, "total" }' "$counted" | sort -rn
else
	awk -v n="$requests" '
		$1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" {
			name = $NF; calls = $4; errors = (NF == 6) ? $5 : 0
			total += calls
			printf "%11.2f  %s\n", calls / n, name
			if (errors > 0) printf "%11.2f  %s\n", errors / n, "of which " name " that failed (EAGAIN for reads)"
		}
		END { printf "%11.2f  %s\n", total / n, "total" }' "$counted" | sort -rn
fi
