# outrider — `make demo` shows it working, `make test` runs every test.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null)
BIN     ?= bin
LDFLAGS := -s -w \
	-X github.com/outrider-sidecar/outrider/internal/version.Version=$(VERSION) \
	-X github.com/outrider-sidecar/outrider/internal/version.Commit=$(COMMIT)

.PHONY: all build outrider echo loadgen consul prometheus test demo bench fuzz clean

all: build

build: outrider echo loadgen

# The release build: the Dockerfile runs `make outrider` too, so these flags
# live here only (deploy/dockerfile_test.go checks that the two agree).
outrider:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/outrider ./cmd/agent

echo:
	$(GO) build -o $(BIN)/echo ./examples/echo

loadgen:
	$(GO) build -o bin/loadgen ./examples/loadgen

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

test: consul prometheus build
	bash scripts/test.sh

demo: consul build
	bash scripts/demo.sh

bench: build
	bash bench/run.sh

clean:
	rm -rf bin
