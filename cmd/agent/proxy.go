package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"syscall"

	"github.com/outrider-sidecar/outrider/internal/cgroup"
	"github.com/outrider-sidecar/outrider/proxy"
)

// addProxy wires the inbound proxy and /v1/qps.
func (a *agent) addProxy() error {
	if a.cfg.Listen.Proxy == "" {
		// No proxy, no measured rate: a clear 404 rather than zeros an
		// autoscaler would take for an idle app.
		a.metrics.HandleFunc("GET /v1/qps", func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "the proxy is off (OUTRIDER_PROXY_LISTEN=off): outrider measures no request rate", http.StatusNotFound)
		})
		a.status["proxy"] = func() any { return map[string]any{"enabled": false} }
		return nil
	}
	fds, err := raiseFDLimit()
	if err != nil {
		a.log.Warn("cannot raise the open-file limit", "soft", fds.soft, "hard", fds.hard, "err", err)
	}
	mem, err := cgroup.MemoryLimit("/")
	if err != nil {
		// The open-file limit still bounds connections.
		a.log.Warn("cannot read the memory limit; client connections are bounded by the open-file limit only", "err", err)
	}
	limits := connLimits{fds: fds, mem: mem}
	maxConns, bound, warning, err := limits.bound(a.cfg.Proxy.MaxConns, a.cfg.Proxy.MaxIdleAppConns)
	if err != nil {
		return err
	}
	if warning != "" {
		a.log.Warn(warning)
	}
	a.log.Info("client connection bound", "soft", fds.soft, "hard", fds.hard, "memory_limit", mem.Bytes,
		"max_connections", maxConns, "bounded_by", bound)
	ln, err := proxy.Listen(context.Background(), a.cfg.Listen.Proxy)
	if err != nil {
		return fmt.Errorf("proxy listener (OUTRIDER_PROXY_LISTEN=%s): %w", a.cfg.Listen.Proxy, err)
	}
	p, err := proxy.New(proxy.Config{
		Upstream:              a.cfg.App.Addr,
		QPSWindow:             a.cfg.Listen.QPSWindow,
		DrainTimeout:          a.cfg.Drain.Timeout,
		MaxConns:              maxConns,
		DisableEventLoop:      !a.cfg.Proxy.EventLoop,
		MaxIdleUpstream:       a.cfg.Proxy.MaxIdleAppConns,
		TunnelIdleTimeout:     a.cfg.Proxy.TunnelIdleTimeout,
		KeepUnderscoreHeaders: a.cfg.Proxy.KeepUnderscoreHeaders,
		Log:                   a.log.With("component", "proxy"),
	}, a.reg)
	if err != nil {
		ln.Close()
		return err
	}
	a.proxy = p
	a.metrics.HandleFunc("GET /v1/qps", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(p.QPS())
	})
	a.status["proxy"] = func() any { return p.Status() }
	a.log.Info("listening", "server", "proxy", "addr", ln.Addr().String(), "app", a.cfg.App.Addr)
	// The proxy: forwards client connections to the app until the drain
	// sequence drains it, or until interrupted, when it drains within
	// OUTRIDER_DRAIN_TIMEOUT. A drained proxy waits for the stop: outrider
	// keeps answering /ready and /metrics until it is told to exit.
	a.addContext("proxy", func(ctx context.Context) error {
		if err := p.Serve(ctx, ln); err != nil {
			return err
		}
		<-ctx.Done()
		return nil
	})
	return nil
}

// fdReserve is the descriptors kept back from client connections for
// outrider's own: listeners, the probe, Consul, /proc reads, logs.
const fdReserve = 64

// Under a memory limit, memReserve is kept for outrider's own use (its
// runtime, metrics, the idle app pool; it starts at 12 MiB) and each
// client connection is given connMemory. A client connection with its
// app connection was measured at 10 KiB idle and 17-19 KiB busy, the
// kernel's socket memory included, which a cgroup counts too
// (docs/proxy.md#overload).
const (
	memReserve = 16 << 20
	connMemory = 32 << 10
)

// connLimits are what bounds the client connections outrider can hold:
// its open-file limit and the memory limit of its cgroup.
type connLimits struct {
	fds fdLimit
	mem cgroup.Limit
}

// bound is the client connection bound in force: maxConns
// (OUTRIDER_PROXY_MAX_CONNS) when set, or the automatic one, with what
// sets it and a warning when the idle pool or maxConns does not fit the
// limits.
func (l connLimits) bound(maxConns, maxIdle int) (n int, by, warning string, err error) {
	if maxConns > 0 {
		if m, ok := l.memMaxConns(); ok && maxConns > m {
			warning = fmt.Sprintf("OUTRIDER_PROXY_MAX_CONNS=%d is more client connections than the memory limit (%s, %s) holds at %d KiB each (%d): "+
				"outrider may be killed for memory before it refuses one; lower it or raise the memory limit",
				maxConns, mib(l.mem.Bytes), l.mem.File, connMemory>>10, m)
		}
		return maxConns, "OUTRIDER_PROXY_MAX_CONNS", warning, nil
	}
	return l.autoMaxConns(maxIdle)
}

// autoMaxConns is OUTRIDER_PROXY_MAX_CONNS=auto: the lower of what the
// open-file limit and the memory limit allow, with a warning when the
// idle pool is larger than the client connections allowed: each client
// holds at most one app connection, so the pool never fills, and its
// share of descriptors is lost to clients.
func (l connLimits) autoMaxConns(maxIdle int) (n int, by, warning string, err error) {
	if n, err = l.fds.maxConns(maxIdle); err != nil {
		return 0, "", "", err
	}
	by = fmt.Sprintf("open-file limit (%d)", l.fds.soft)
	if m, ok := l.memMaxConns(); ok && m < n {
		if m == 0 {
			return 0, "", "", fmt.Errorf("the memory limit (%s, %s) leaves no room for client connections once %s are kept for outrider: "+
				"raise the memory limit or set OUTRIDER_PROXY_MAX_CONNS", mib(l.mem.Bytes), l.mem.File, mib(memReserve))
		}
		n, by = m, "memory limit ("+mib(l.mem.Bytes)+")"
	}
	if n < maxIdle {
		warning = fmt.Sprintf("OUTRIDER_PROXY_MAX_IDLE_APP_CONNS=%d is more than the %d client connections the %s allows; "+
			"the pool never fills and takes descriptors from clients: lower it or raise the limit", maxIdle, n, by)
	}
	return n, by, warning, nil
}

// memMaxConns is the client connections the memory limit allows, and
// whether there is one.
func (l connLimits) memMaxConns() (int, bool) {
	if l.mem.Bytes == 0 {
		return 0, false
	}
	return int(min((l.mem.Bytes-min(l.mem.Bytes, memReserve))/connMemory, 1<<30)), true
}

// mib writes a byte count in MiB.
func mib(b uint64) string {
	return strconv.FormatFloat(float64(b)/(1<<20), 'f', -1, 64) + " MiB"
}

// fdLimit is the process's open-file limit.
type fdLimit struct{ soft, hard uint64 }

// maxConns is the client connections the open-file limit allows: nine
// tenths of the soft limit less fdReserve and the idle app connections
// kept (maxIdle), halved because a client connection holds an app
// connection too. Past it connections are refused before descriptors run
// out, rather than accepts failing. A limit that leaves no client
// connection at all is an error.
func (l fdLimit) maxConns(maxIdle int) (int, error) {
	usable := l.soft - l.soft/10 // no overflow at RLIM_INFINITY
	reserve := fdReserve + uint64(max(maxIdle, 0))
	n := (usable - min(usable, reserve)) / 2
	if n == 0 {
		return 0, fmt.Errorf("the open-file limit (%d) leaves no descriptors for client connections once %d are kept for outrider "+
			"and %d for idle app connections (OUTRIDER_PROXY_MAX_IDLE_APP_CONNS): raise the limit (ulimit -n), "+
			"lower OUTRIDER_PROXY_MAX_IDLE_APP_CONNS, or set OUTRIDER_PROXY_MAX_CONNS", l.soft, fdReserve, max(maxIdle, 0))
	}
	return int(min(n, 1<<30)), nil
}

// raiseFDLimit raises the soft open-file limit to the hard one, if Go's
// runtime has not, and returns the limit in force.
//
// Go raises it at start-up to one below the hard limit, and gives the
// processes it starts (the wrapped app, exec probes) the soft limit
// outrider was started with: an app that uses select() needs its 1,024.
// Any change made here, with Setrlimit or prlimit, would tell Go the
// program chose a limit for its children too, so a limit Go raised is
// left as it is: one descriptor short of the hard limit costs nothing.
func raiseFDLimit() (fdLimit, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return fdLimit{}, fmt.Errorf("read RLIMIT_NOFILE: %w", err)
	}
	if rl.Cur+1 < rl.Max {
		want := rl
		want.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
			return fdLimit{soft: rl.Cur, hard: rl.Max}, fmt.Errorf("raise RLIMIT_NOFILE from %d to %d: %w", rl.Cur, rl.Max, err)
		}
		rl = want
	}
	return fdLimit{soft: rl.Cur, hard: rl.Max}, nil
}
