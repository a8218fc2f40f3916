// Package consultest starts a throw-away Consul dev agent for a test, on
// free loopback ports, from the bin/consul that `make consul` builds.
package consultest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"
)

// Server is one running (or stopped) Consul dev agent.
type Server struct {
	// HTTPAddr is host:port of the HTTP API.
	HTTPAddr string
	// Token is the management token when ACLs are on, else empty.
	Token string

	t       testing.TB
	bin     string
	args    []string
	cmd     *exec.Cmd
	done    chan struct{}
	logFile string
}

// Option changes how the agent starts.
type Option func(*Server)

// WithACL turns ACLs on with default deny and sets Token to a management
// token the test can use.
func WithACL(token string) Option {
	return func(s *Server) {
		s.Token = token
		s.args = append(s.args, "-hcl", fmt.Sprintf(
			`acl { enabled = true default_policy = "deny" enable_token_persistence = false tokens { initial_management = %q agent = %q } }`,
			token, token))
	}
}

var seq atomic.Int64

// portAttempts is how many sets of free ports Start tries.
const portAttempts = 3

// errPortTaken says the agent found one of its ports taken: FreePorts
// found it free, and another process (a client's outgoing connection, a
// test package running beside this one) took it before the agent bound it.
var errPortTaken = errors.New("a port was taken before consul bound it")

// Start runs `consul agent -dev` on free ports and stops it when the test
// ends; when one of the ports was taken in the moment before the agent
// bound it, it tries again on other ports. It fails the test (never skips
// it) when the binary is missing.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	bin := Binary(t)
	var s *Server
	for attempt := 1; ; attempt++ {
		s = newServer(t, bin, FreePorts(t, 4), opts)
		err := s.launch()
		if err == nil {
			break
		}
		if !errors.Is(err, errPortTaken) || attempt == portAttempts {
			t.Fatal(err)
		}
		t.Logf("consultest: %v; starting again on other ports", errPortTaken)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			if b, err := os.ReadFile(s.logFile); err == nil {
				t.Logf("consul log:\n%s", tail(b, 4000))
			}
		}
	})
	return s
}

// newServer sets up a dev agent on ports (HTTP, Serf LAN, Serf WAN,
// server RPC), not started yet.
func newServer(t testing.TB, bin string, ports []int, opts []Option) *Server {
	s := &Server{
		t:        t,
		bin:      bin,
		HTTPAddr: "127.0.0.1:" + strconv.Itoa(ports[0]),
		logFile:  filepath.Join(t.TempDir(), "consul.log"),
	}
	s.args = []string{"agent", "-dev",
		"-node", fmt.Sprintf("outrider-test-%d-%d", os.Getpid(), seq.Add(1)),
		"-bind", "127.0.0.1", "-client", "127.0.0.1",
		"-http-port", strconv.Itoa(ports[0]),
		"-serf-lan-port", strconv.Itoa(ports[1]),
		"-serf-wan-port", strconv.Itoa(ports[2]),
		"-server-port", strconv.Itoa(ports[3]),
		"-dns-port", "-1", "-grpc-port", "-1", "-grpc-tls-port", "-1",
		"-log-level", "warn",
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Start (re)starts a stopped agent on the same ports. A dev agent keeps no
// state, so a restart comes back empty, like a Consul that lost its data.
func (s *Server) Start() {
	s.t.Helper()
	if err := s.launch(); err != nil {
		s.t.Fatal(err)
	}
}

// launch starts the agent and waits until it is ready, or says why it
// did not get there.
func (s *Server) launch() error {
	if s.cmd != nil {
		return errors.New("consultest: agent already running")
	}
	log, err := os.OpenFile(s.logFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("consultest: open log: %w", err)
	}
	cmd := exec.Command(s.bin, s.args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("consultest: start %s: %w", s.bin, err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		log.Close()
		close(s.done)
	}()
	if err := s.waitReady(30 * time.Second); err != nil {
		s.Stop()
		return err
	}
	return nil
}

// Stop kills the agent and waits for it to exit. Stopping twice is fine.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.done
	s.cmd = nil
}

// Pause stops the agent (SIGSTOP) without killing it: the kernel still
// accepts connections on its ports and nothing answers them, as on an
// agent that hangs. Resume continues it; Stop kills a paused agent too.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues an agent Pause stopped.
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.t.Helper()
	if s.cmd == nil {
		s.t.Fatalf("consultest: agent not running")
	}
	if err := syscall.Kill(-s.cmd.Process.Pid, sig); err != nil {
		s.t.Fatalf("consultest: signal the agent: %v", err)
	}
}

// Client returns a consul/api client for the agent, with the management
// token when ACLs are on.
func (s *Server) Client() *consul.Client {
	s.t.Helper()
	c, err := consul.NewClient(&consul.Config{Address: s.HTTPAddr, Token: s.Token})
	if err != nil {
		s.t.Fatalf("consultest: client: %v", err)
	}
	return c
}

// URL is the base URL of the HTTP API, for CONSUL_HTTP_ADDR.
func (s *Server) URL() string { return "http://" + s.HTTPAddr }

func (s *Server) waitReady(limit time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	for {
		select {
		case <-s.done:
			b, _ := os.ReadFile(s.logFile)
			err := fmt.Errorf("consultest: consul exited while starting:\n%s", tail(b, 4000))
			if bytes.Contains(b, []byte("address already in use")) {
				err = fmt.Errorf("%w: %w", errPortTaken, err)
			}
			return err
		default:
		}
		// Each look is short: whatever holds the port may not answer,
		// and an agent that exited must be noticed.
		look, cancelLook := context.WithTimeout(ctx, time.Second)
		ready := s.leaderElected(look)
		cancelLook()
		if ready {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("consultest: consul on %s not ready after %s", s.HTTPAddr, limit)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// leaderElected reports whether the agent answers with a leader and has
// registered its own node, after which service registration works.
func (s *Server) leaderElected(ctx context.Context) bool {
	for _, path := range []string{"/v1/status/leader", "/v1/catalog/nodes"} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL()+path, nil)
		if s.Token != "" {
			req.Header.Set("X-Consul-Token", s.Token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		var body bytes.Buffer
		_, _ = body.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || len(bytes.TrimSpace(body.Bytes())) <= 4 {
			return false // "" or [] while there is no leader or node yet
		}
	}
	return true
}

// Binary finds the consul binary: $OUTRIDER_CONSUL_BIN, else bin/consul
// in the module root, else consul on PATH. It fails the test when none is.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("OUTRIDER_CONSUL_BIN"); p != "" {
		return p
	}
	if root, err := ModuleRoot(); err == nil {
		p := filepath.Join(root, "bin", "consul")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("consul"); err == nil {
		return p
	}
	t.Fatalf("consul binary not found: run `make consul` (it builds bin/consul v1.14.0 from tools/go.mod), or set OUTRIDER_CONSUL_BIN")
	return ""
}

// ModuleRoot returns the directory of outrider's go.mod, found upwards
// from the working directory.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil &&
			bytes.Contains(b, []byte("module github.com/outrider-sidecar/outrider\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no outrider go.mod above the working directory")
		}
		dir = parent
	}
}

// FreePorts returns n distinct loopback TCP ports that were free a moment
// ago, for servers that take their ports as flags, and that no earlier
// call in this process returned: the kernel may hand a port just closed
// out again, and two servers of one test given the same port fail to
// start.
//
// Each port stays reserved until the test ends (see reservePort): between
// this call and the server's bind, no other process's bind to port 0 and
// no outgoing connection can be given it, which happened when this
// process or a test package beside it opened a socket in that moment
// (echo: "bind: address already in use"). A Go server binds it all the
// same.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	var ports []int
	var release []func()
	defer func() {
		for _, r := range release {
			r()
		}
	}()
	for tries := 0; len(ports) < n; tries++ {
		if tries == 100*n {
			t.Fatalf("find a free port: %d tries gave only ports handed out before", tries)
		}
		port, free, err := reservePort()
		if err != nil {
			t.Fatalf("find a free port: %v", err)
		}
		givenMu.Lock()
		seen := given[port]
		given[port] = true
		givenMu.Unlock()
		if seen {
			release = append(release, free)
			continue
		}
		ports = append(ports, port)
		t.Cleanup(free)
	}
	return ports
}

// given holds the ports FreePorts returned.
var (
	givenMu sync.Mutex
	given   = map[int]bool{}
)

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
