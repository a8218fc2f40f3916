# Sourced by bench/syscalls.sh and bench/compare.sh: a temporary directory
# and the processes started into PIDS, both gone on exit, failure or
# Ctrl-C; free loopback ports from next_port up. The caller defines die.

# start_scratch makes TMP, a temporary directory named after $1, and sets
# the traps that stop every process in PIDS and remove TMP on exit.
start_scratch() {
	TMP=$(mktemp -d "${TMPDIR:-/tmp}/outrider-$1.XXXXXX")
	PIDS=()
	trap stop_scratch EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

stop_scratch() {
	local status=$? pid
	trap - EXIT INT TERM
	for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
	rm -rf "$TMP"
	exit "$status"
}

# port_free tells whether nothing accepts on 127.0.0.1:$1.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# take_port sets variable $1 to the next free loopback port from next_port.
take_port() {
	while ! port_free "$next_port"; do next_port=$((next_port + 1)); done
	printf -v "$1" '%s' "$next_port"
	next_port=$((next_port + 1))
}

# wait_port waits up to 10 s for something to accept on 127.0.0.1:$1.
wait_port() {
	local i
	for i in $(seq 100); do
		port_free "$1" || return 0
		sleep 0.1
	done
	die "nothing answers on 127.0.0.1:$1"
}

# outrider_env sets OUTRIDER_ENV to the environment of an outrider that
# proxies 127.0.0.1:$2 to the app on 127.0.0.1:$1, with its metrics on
# port $3 and its admin endpoints on port $4, no registry and no drain delay.
outrider_env() {
	OUTRIDER_ENV=(OUTRIDER_REGISTRY=none
		"OUTRIDER_PROXY_LISTEN=127.0.0.1:$2"
		"OUTRIDER_APP_ADDR=127.0.0.1:$1"
		"OUTRIDER_METRICS_LISTEN=127.0.0.1:$3"
		"OUTRIDER_ADMIN_LISTEN=127.0.0.1:$4"
		OUTRIDER_LOG_LEVEL=warn OUTRIDER_DRAIN_DELAY=0s)
}
