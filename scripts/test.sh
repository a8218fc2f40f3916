#!/usr/bin/env bash
# Runs every check and test: formatting, vet, unit, integration (against a
# real Consul from bin/consul, a real Prometheus from bin/prometheus) and
# end-to-end tests, then the scaling-loop module (loop/, against a real
# control plane from bin/etcd, bin/kube-apiserver and
# bin/kube-controller-manager, and KEDA from bin/keda-operator and
# bin/keda-adapter). `make test` calls it after building those,
# bin/consul, bin/prometheus, bin/promtool, bin/outrider and bin/echo.
set -euo pipefail
cd "$(dirname "$0")/.."

unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change these files:" >&2
	echo "$unformatted" >&2
	exit 1
fi
go vet ./...
# The image is built for the machine it is built on: arm64 as well as
# amd64. The proxy's system calls differ between the two (arm64 has no
# epoll_wait), so type-check that build too.
GOARCH=arm64 go vet ./...
# deploy/ is its own Go module (kustomize, buildkit and k8s.io/api stay out
# of outrider's go.mod): its tests check the Dockerfile, deploy/k8s,
# deploy/systemd and what `outrider inject` writes.
(cd deploy && go vet ./...)
# bench/ is its own module (the chart's plotting library stays out of
# outrider's go.mod): vet and test it too.
(cd bench && go vet ./...)
# loop/ is its own module (client-go stays out of outrider's go.mod).
(cd loop && go vet ./...)
# The Kubernetes libraries are for the loop's tests only: outrider's binary
# must not link them.
deps=$(go list -deps ./cmd/agent)
if k8s=$(grep -E '^(k8s\.io|sigs\.k8s\.io)/' <<<"$deps"); then
	echo "cmd/agent depends on Kubernetes packages:" >&2
	echo "$k8s" >&2
	exit 1
fi
# Nearly every page of the agent's binary ends up resident in each pod
# that runs it, so what it links is memory. text/template's reflection
# keeps every exported method of the program (a quarter of the binary),
# and gRPC's library added 1.5 MB for one health call that probe/grpc.go
# makes on net/http: neither may come back.
if fat=$(grep -E '^(text|html)/template$|^golang.org/x/net/trace$|^google.golang.org/grpc$' <<<"$deps"); then
	echo "cmd/agent links packages that make its binary and its memory larger:" >&2
	echo "$fat" >&2
	echo "find the importer with: go list -deps -f '{{.ImportPath}}: {{.Imports}}' ./cmd/agent | grep -E 'template|grpc'" >&2
	exit 1
fi
# Each fuzz target runs a count of inputs, not a time: Go 1.26's fuzzing
# coordinator can report its own -fuzztime deadline as a failure, with no
# failing input (go.dev/issue/75804, fixed in Go 1.27). 400,000 inputs
# take about 30 s each on 2 cores.
go test -run '^$' -fuzz '^FuzzRequest$' -fuzztime 400000x ./proxy/
go test -run '^$' -fuzz '^FuzzResponse$' -fuzztime 400000x ./proxy/

export OUTRIDER_CONSUL_BIN="$PWD/bin/consul"
export OUTRIDER_PROMETHEUS_BIN="$PWD/bin/prometheus"
export OUTRIDER_PROMTOOL_BIN="$PWD/bin/promtool"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
go test -count=1 -race -v -timeout 30m ./... 2>&1 | tee "$log" || status=$?
# Allocation bounds are measured without the race detector, whose
# sync.Pool drops a quarter of the buffers put back, at random; stack
# sizes too, as its instrumentation deepens every frame.
go test -count=1 -v -run '^(TestStreamsLargeBodies|TestConnectionStack)$' ./proxy/ 2>&1 | tee -a "$log" || status=$?
(cd deploy && go test -count=1 -v -timeout 10m ./...) 2>&1 | tee -a "$log" || status=$?
(cd bench && go test -count=1 -race -v ./...) 2>&1 | tee -a "$log" || status=$?
(cd loop && go test -count=1 -race -v -p 1 -timeout 30m ./...) 2>&1 | tee -a "$log" || status=$?

passed=$(grep -c -- '^\s*--- PASS' "$log" || true)
failed=$(grep -c -- '^\s*--- FAIL' "$log" || true)
skipped=$(grep -c -- '^\s*--- SKIP' "$log" || true)
if [ "$skipped" -gt 0 ]; then
	echo "skipped tests:"
	grep -- '^\s*--- SKIP' "$log"
fi
echo "tests: $passed passed, $failed failed, $skipped skipped"
exit "$status"
