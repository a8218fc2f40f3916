#!/usr/bin/env bash
# The scaling loop, long form: a real control plane (etcd, kube-apiserver,
# kube-controller-manager), KEDA, Prometheus and Consul on loopback; the
# Deployment and ScaledObject of deploy/k8s; pods of outrider and the sample
# app run by the test's stand-in kubelet; and a load client that raises the
# rate and lowers it again. It ends with one summary line and writes the
# chart, the summary, the load client's timeline and every container's log
# into loop/results/<UTC time>/. `make scale` builds what is missing and
# runs it; SCALE_PROFILE=RATE:DURATION,… changes the load.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${SCALE_PROFILE:-50:30s,1000:120s,50:150s}
results=$PWD/loop/results/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$results"
echo "scale: load profile $profile (requests/s:duration); the HPA's target is 100 requests/s per pod"
echo "scale: results in $results"

status=0
(cd loop && SCALE_PROFILE=$profile SCALE_RESULTS=$results \
	go test -count=1 -run '^TestScalingLoop$' -v -timeout 30m ./scaleloop/) \
	> "$results/test.log" 2>&1 &
test_pid=$!
# Progress: the test's own lines, as they come.
tail -n +1 -f "$results/test.log" --pid "$test_pid" | grep --line-buffered -E '^\s+scaleloop_test.go:[0-9]+: \[' | sed -u 's/^ *scaleloop_test.go:[0-9]*: /scale: /' || true
wait "$test_pid" || status=$?

if [[ -f $results/summary.txt ]]; then
	echo "scale: chart $results/scaling-loop.png"
	cat "$results/summary.txt"
fi
if [[ $status -ne 0 ]]; then
	echo "scale: the loop test failed; its log is $results/test.log" >&2
	grep -E 'want|^\s+scaleloop_test.go:[0-9]+: .*(failed|skipped)' "$results/test.log" | head -20 >&2 || true
fi
exit "$status"
