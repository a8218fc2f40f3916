// Command loadgen is the load client of outrider's scale-in and scaling
// tests: a client such as a service written without retries would be. It
// discovers the passing instances of a service through a Consul blocking
// query, sends requests at a steady rate (or a rate profile), round-robin
// over the instances, on keep-alive connections, and sends each request
// exactly once: a request that fails is counted, never retried. Like a
// client configured to go with its servers, it does not reuse a connection
// that has been idle longer than -idle-timeout (30s), below the time after
// which servers close idle connections (outrider's proxy: 60s), since a
// request sent as the server closes it would fail.
//
//	loadgen -consul 127.0.0.1:8500 -service echo -rate 500 -duration 40s
//	loadgen -consul 127.0.0.1:8500 -service echo -profile 100:20s,3000:60s,100:60s
//
// It prints a JSON summary on stdout when done (or on SIGTERM/SIGINT):
// requests sent, succeeded and failed, failures by kind, and per instance
// when it was first discovered and first answered.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	consulAddr := flag.String("consul", envOr("CONSUL_HTTP_ADDR", "127.0.0.1:8500"), "Consul HTTP address (host:port)")
	service := flag.String("service", "", "service to discover (required)")
	rate := flag.Float64("rate", 200, "requests per second (with -duration)")
	duration := flag.Duration("duration", 30*time.Second, "how long to send at -rate")
	profile := flag.String("profile", "", "rate profile RATE:DURATION,… (overrides -rate and -duration)")
	path := flag.String("path", "/", "request path")
	workers := flag.Int("workers", 256, "concurrent requests at most")
	timeout := flag.Duration("timeout", 10*time.Second, "one request's limit")
	idle := flag.Duration("idle-timeout", 30*time.Second, "close rather than reuse a connection idle this long (keep it below the server's keep-alive timeout)")
	flag.Parse()

	if *service == "" {
		fail("loadgen: -service is required")
	}
	steps := []step{{rate: *rate, d: *duration}}
	if *profile != "" {
		var err error
		if steps, err = parseProfile(*profile); err != nil {
			fail("loadgen: -profile: %v", err)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	disc := newDiscovery(*consulAddr, *service)
	go disc.run(ctx)
	if err := disc.waitFirst(ctx, 30*time.Second); err != nil {
		fail("loadgen: %v", err)
	}
	g := newGenerator(disc, *path, *workers, *timeout, *idle)
	sum := g.run(ctx, steps)
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(sum); err != nil {
		fail("loadgen: write summary: %v", err)
	}
}

// step is one stretch of a rate profile.
type step struct {
	rate float64
	d    time.Duration
}

// parseProfile reads "RATE:DURATION,…", e.g. "100:10s,3000:30s".
func parseProfile(s string) ([]step, error) {
	var steps []step
	for _, part := range strings.Split(s, ",") {
		r, d, ok := strings.Cut(strings.TrimSpace(part), ":")
		if !ok {
			return nil, fmt.Errorf("%q is not RATE:DURATION", part)
		}
		rate, err := strconv.ParseFloat(r, 64)
		if err != nil || rate < 0 {
			return nil, fmt.Errorf("%q: rate %q is not a number ≥ 0", part, r)
		}
		dur, err := time.ParseDuration(d)
		if err != nil || dur <= 0 {
			return nil, fmt.Errorf("%q: duration %q is not a positive duration (e.g. 10s)", part, d)
		}
		steps = append(steps, step{rate: rate, d: dur})
	}
	if len(steps) == 0 {
		return nil, errors.New("empty profile")
	}
	return steps, nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return strings.TrimPrefix(v, "http://")
	}
	return def
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(2)
}
