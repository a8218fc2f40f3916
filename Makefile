# outrider — `make demo` shows it working, `make test` runs every test.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null)
BIN     ?= bin
LDFLAGS := -s -w \
	-X github.com/outrider-sidecar/outrider/internal/version.Version=$(VERSION) \
	-X github.com/outrider-sidecar/outrider/internal/version.Commit=$(COMMIT)

.PHONY: all build outrider echo loadgen consul prometheus etcd kube keda test demo scale bench fuzz clean

all: build

build: outrider echo loadgen

# The release build: the Dockerfile runs `make outrider` too, so these flags
# live here only (deploy/dockerfile_test.go checks that the two agree).
outrider:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/outrider ./cmd/agent

echo:
	$(GO) build -o $(BIN)/echo ./examples/echo

loadgen:
	$(GO) build -o $(BIN)/loadgen ./examples/loadgen

# A real Consul for tests and the demo: v1.14.0 (MPL-2.0), built once from
# the Go module proxy through the separate tools module.
consul: bin/consul
bin/consul: tools/go.mod tools/go.sum
	$(GO) build -modfile=tools/go.mod -o bin/consul github.com/hashicorp/consul
	@touch bin/consul

# A real Prometheus and its promtool for tests, built once through their own
# tools module (Debian's prometheus has no consul_sd_configs nor
# kubernetes_sd_configs). Both binaries come from one build.
prometheus: bin/prometheus bin/promtool
bin/prometheus bin/promtool &: tools/prometheus/go.mod tools/prometheus/go.sum
	@mkdir -p bin
	cd tools/prometheus && $(GO) build -trimpath -o ../../bin/ \
		github.com/prometheus/prometheus/cmd/prometheus \
		github.com/prometheus/prometheus/cmd/promtool
	@touch bin/prometheus bin/promtool

# The Kubernetes control plane for the scaling-loop tests
# (loop/internal/kubetest): etcd v3.7.3 and kube-apiserver +
# kube-controller-manager v1.37.2, each from its own tools module so their
# dependency sets never mix with outrider's or Consul's. Built once (cold:
# ~26 CPU-minutes, ~13 min on 2 free cores, ~6 GB of build cache), then
# cached in bin/ until the tools module changes.
KUBE_VERSION  := v1.37.2
KUBE_LDFLAGS  := $(foreach p,k8s.io/component-base/version k8s.io/client-go/pkg/version, \
	-X $(p).gitVersion=$(KUBE_VERSION) -X $(p).gitMajor=1 -X $(p).gitMinor=37 \
	-X $(p).gitTreeState=clean -X $(p).buildDate=1970-01-01T00:00:00Z)

etcd: bin/etcd
bin/etcd: tools/etcd/go.mod tools/etcd/go.sum
	bash scripts/build-tool.sh tools/etcd bin/etcd go.etcd.io/etcd/server/v3

kube: bin/kube-apiserver bin/kube-controller-manager
bin/kube-apiserver: tools/kube/go.mod tools/kube/go.sum
	bash scripts/build-tool.sh tools/kube $@ k8s.io/kubernetes/cmd/kube-apiserver '$(KUBE_LDFLAGS)'
bin/kube-controller-manager: tools/kube/go.mod tools/kube/go.sum
	bash scripts/build-tool.sh tools/kube $@ k8s.io/kubernetes/cmd/kube-controller-manager '$(KUBE_LDFLAGS)'

# KEDA's operator and metrics adapter v2.21.0, for the scaling loop's
# ScaledObject (cold: ~26 CPU-minutes plus a large module download); the
# tests of loop/internal/kedatest run them, and read KEDA's CRDs from the
# module source this download leaves in the Go module cache.
KEDA_LDFLAGS := -X github.com/kedacore/keda/v2/version.Version=v2.21.0
keda: bin/keda-operator bin/keda-adapter
bin/keda-operator: tools/keda/go.mod tools/keda/go.sum
	bash scripts/build-tool.sh tools/keda $@ github.com/kedacore/keda/v2/cmd/operator '$(KEDA_LDFLAGS)'
bin/keda-adapter: tools/keda/go.mod tools/keda/go.sum
	bash scripts/build-tool.sh tools/keda $@ github.com/kedacore/keda/v2/cmd/adapter '$(KEDA_LDFLAGS)'

test: consul prometheus etcd kube keda build
	bash scripts/test.sh

demo: consul build
	bash scripts/demo.sh

# The whole scaling loop on a real control plane, KEDA, Prometheus and
# Consul: one summary line, and a chart in loop/results/<time>/. The first
# run builds the servers (about 40 minutes on 2 cores, see
# docs/scaling-loop.md); later runs take about 6 minutes.
scale: consul prometheus etcd kube keda build
	bash scripts/scale.sh

bench: build
	bash bench/run.sh

clean:
	rm -rf bin
