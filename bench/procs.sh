# Sourced by the bench scripts: a temporary directory and the processes
# started into PIDS, both gone on exit, failure or Ctrl-C; free loopback
# ports from next_port up; the sample app; CPU pinning, and CPU time and
# RSS of processes; nginx's and outrider's configuration. The caller
# defines die.

# start_scratch makes TMP, a temporary directory named after $1, and sets
# the traps that stop every process in PIDS and remove TMP on exit.
start_scratch() {
	TMP=$(mktemp -d "${TMPDIR:-/tmp}/outrider-$1.XXXXXX")
	# nginx's worker drops to an unprivileged user when run as root; it
	# must be able to enter its prefix directory.
	chmod 755 "$TMP"
	PIDS=()
	trap stop_scratch EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

# stop_scratch stops every process in PIDS (TERM, then KILL after 5 s) and
# removes TMP.
stop_scratch() {
	local status=$? pid i
	trap - EXIT INT TERM
	for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
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

# nginx_conf writes $1/nginx.conf: nginx with $4 workers (and at most $5
# open files each) on 127.0.0.1:$2, proxying to the app on 127.0.0.1:$3
# with up to 64 idle keep-alive connections, everything under $1. Like
# outrider, it tells the app the client's address, scheme and Host in
# X-Forwarded-For, -Proto and -Host: the app parses those fields, and a
# peer that left them out would hand the app less work than a sidecar must.
nginx_conf() {
	local dir=$1 port=$2 app=$3 workers=$4 nofile=$5
	mkdir -p "$dir/logs"
	# Its worker, unprivileged when nginx runs as root, enters $dir.
	chmod 755 "$dir"
	cat >"$dir/nginx.conf" <<EOF
worker_processes $workers;
worker_rlimit_nofile $nofile;
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
        server 127.0.0.1:$app;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$http_host;
        }
    }
}
EOF
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

# start_app starts the sample app (bin/echo) on a free loopback port, which
# it leaves in app, and waits until it accepts; its log is $TMP/echo.log.
start_app() {
	take_port app
	bin/echo -listen "127.0.0.1:$app" >"$TMP/echo.log" 2>&1 &
	PIDS+=($!)
	wait_port "$app"
}

# outrider_ports takes free ports for one outrider in front of the app
# (port, metrics and admin) and sets OUTRIDER_ENV for them.
outrider_ports() {
	take_port port
	take_port metrics
	take_port admin
	outrider_env "$app" "$port" "$metrics" "$admin"
}

# pin_cpus checks GOMAXPROCS against this machine's CPUs and sets CPUS,
# unless set, to the last GOMAXPROCS of them, as bench/run.sh pins a proxy.
pin_cpus() {
	local ncpu
	ncpu=$(nproc)
	[ "$GOMAXPROCS" -le "$ncpu" ] || die "GOMAXPROCS=$GOMAXPROCS: this machine has $ncpu CPUs"
	CPUS=${CPUS:-$((ncpu - GOMAXPROCS))-$((ncpu - 1))}
}

# rss_kb prints VmRSS (kB) summed over the given pids.
rss_kb() {
	local pid total=0 key v rest
	for pid in "$@"; do
		while read -r key v rest; do
			if [ "$key" = VmRSS: ]; then total=$((total + v)); fi
		done 2>/dev/null <"/proc/$pid/status" || true
	done
	echo "$total"
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
