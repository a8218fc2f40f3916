package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"

	"github.com/outrider-sidecar/outrider/config"
)

// TestAgentFirstFailureStopsTheRest: one actor failing interrupts every
// other actor and makes outrider exit 1 with the failure in its log.
func TestAgentFirstFailureStopsTheRest(t *testing.T) {
	var logs bytes.Buffer
	a := newAgent(config.Config{}, slog.New(slog.NewTextHandler(&logs, nil)))
	stopped := make(chan struct{})
	a.addContext("steady", func(ctx context.Context) error {
		<-ctx.Done()
		close(stopped)
		return nil
	})
	a.addContext("broken", func(context.Context) error {
		return errors.New("listener vanished")
	})

	done := make(chan int)
	go func() { done <- a.run() }()
	select {
	case code := <-done:
		if code != exitFailed {
			t.Errorf("exit status = %d, want %d", code, exitFailed)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after an actor failed")
	}
	select {
	case <-stopped:
	default:
		t.Error("the steady actor was not interrupted")
	}
	if want := "broken: listener vanished"; !strings.Contains(logs.String(), want) {
		t.Errorf("log lacks %q:\n%s", want, logs.String())
	}
}

// TestAgentCleanStopIsZero: actors that all return without error (as on
// a signal) give exit status 0.
func TestAgentCleanStopIsZero(t *testing.T) {
	a := newAgent(config.Config{}, slog.New(slog.DiscardHandler))
	a.addContext("done at once", func(context.Context) error { return nil })
	if code := a.run(); code != exitOK {
		t.Errorf("exit status = %d, want %d", code, exitOK)
	}
}

func TestConsulURL(t *testing.T) {
	tests := []struct {
		scheme, addr, want string
	}{
		{"http", "127.0.0.1:8500", "http://127.0.0.1:8500"},
		{"http", "http://127.0.0.1:8500", "http://127.0.0.1:8500"},
		{"http", "https://consul.service:8501", "https://consul.service:8501"},
		{"https", "http://127.0.0.1:8501", "https://127.0.0.1:8501"}, // CONSUL_HTTP_SSL=true wins
		{"http", "unix:///run/consul.sock", "unix:///run/consul.sock"},
		{"http", "http://admin:s3cret@127.0.0.1:8500", "http://xxxxx@127.0.0.1:8500"},
		{"http", "http://admin:ab/s3cret@127.0.0.1:8500", "http://xxxxx@127.0.0.1:8500"},
	}
	for _, tt := range tests {
		if got := consulURL(&consul.Config{Scheme: tt.scheme, Address: tt.addr}); got != tt.want {
			t.Errorf("consulURL(%s, %s) = %q, want %q", tt.scheme, tt.addr, got, tt.want)
		}
	}
}

// TestConsulSettingsAreDocumented: every CONSUL_* variable check-config
// prints is in the README's table of variables, where a reader of the
// output looks it up.
func TestConsulSettingsAreDocumented(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range consulSettings(consul.DefaultConfig()) {
		if !strings.Contains(string(readme), "`"+s.Var+"`") {
			t.Errorf("check-config prints %s, which the README does not document", s.Var)
		}
	}
}

// TestCheckConsulAddr: a CONSUL_HTTP_ADDR consul/api would take and then
// fail on at every call is a configuration error, which never shows the
// credentials.
func TestCheckConsulAddr(t *testing.T) {
	tests := []struct {
		addr string
		want string // "" for valid
	}{
		{"127.0.0.1:8500", ""},
		{"http://127.0.0.1:8500", ""},
		{"https://consul.service.consul:8501/prefix", ""},
		{"consul.service", ""},
		{"[::1]:8500", ""},
		{"[::1]", ""},
		{"unix:///run/consul/http.sock", ""},
		{"http://admin:s3cret@127.0.0.1:8500", `CONSUL_HTTP_ADDR="http://xxxxx@127.0.0.1:8500" holds a user name or password`},
		{"admin:s3cret@127.0.0.1:8500", `CONSUL_HTTP_ADDR="xxxxx@127.0.0.1:8500" holds a user name or password`},
		// A password with a '/' that is not percent-encoded (base64 has
		// them): the host seemed to be "admin:ab", and the error quoted it.
		{"http://admin:ab/s3cret+x=@127.0.0.1:8500", `CONSUL_HTTP_ADDR="http://xxxxx@127.0.0.1:8500" holds a user name or password`},
		{"https://admin:ab/s3cret@consul.service:8501/prefix", `CONSUL_HTTP_ADDR="https://xxxxx@consul.service:8501/prefix" holds a user name or password`},
		{"admin:ab/s3cret@127.0.0.1:8500", `CONSUL_HTTP_ADDR="xxxxx@127.0.0.1:8500" holds a user name or password`},
		{"http://", `CONSUL_HTTP_ADDR="http://" has no host`},
		{"127.0.0.1:99999", "with a port from 1 to 65535"},
		{"127.0.0.1:+8500", "with a port from 1 to 65535"},
		{"127.0.0.1:", "with a port from 1 to 65535"},
		{":8500", "with a port from 1 to 65535"},
		{"::::", "is not host:port"},
		{"::1", "is not host:port"},
		{"http://127.0.0.1:8500/", `CONSUL_HTTP_ADDR="http://127.0.0.1:8500/" ends with /`},
		{"https://consul.service.consul:8501//", "drop the trailing /, e.g. https://consul.service.consul:8501"},
		{"127.0.0.1:8500/", "has a path but no scheme"},
		{"consul.service/prefix", "has a path but no scheme"},
	}
	for _, tt := range tests {
		err := checkConsulAddr(tt.addr)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("checkConsulAddr(%q) = %v, want nil", tt.addr, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("checkConsulAddr(%q) = %v, want an error with %q", tt.addr, err, tt.want)
		case err != nil && strings.Contains(err.Error(), "s3cret"):
			t.Errorf("checkConsulAddr(%q) shows the password: %v", tt.addr, err)
		}
	}
}

// TestCheckConsulFiles: every file a CONSUL_* variable names that cannot
// be read is an error naming that variable, all in one round; consul/api
// stops at the first and names only the file.
func TestCheckConsulFiles(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte("t0ken"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  consul.Config
		want []string // one per error, in order; none for valid
	}{
		{name: "none set", cfg: consul.Config{}},
		{name: "all readable", cfg: consul.Config{TokenFile: file, TLSConfig: consul.TLSConfig{CAFile: file, CAPath: dir, CertFile: file, KeyFile: file}}},
		{name: "token file missing", cfg: consul.Config{TokenFile: missing},
			want: []string{`CONSUL_HTTP_TOKEN_FILE="` + missing + `" does not exist: set the path of the file, or unset the variable`}},
		{name: "every one wrong", cfg: consul.Config{TokenFile: missing, TLSConfig: consul.TLSConfig{CAFile: dir, CAPath: file, CertFile: missing, KeyFile: dir}},
			want: []string{
				`CONSUL_HTTP_TOKEN_FILE="` + missing + `" does not exist`,
				`CONSUL_CACERT="` + dir + `" is not a regular file (a directory); point it at a file`,
				`CONSUL_CAPATH="` + file + `" is not a directory; point it at a directory of PEM certificates, or set CONSUL_CACERT for one file`,
				`CONSUL_CLIENT_CERT="` + missing + `" does not exist`,
				`CONSUL_CLIENT_KEY="` + dir + `" is not a regular file (a directory)`,
			}},
		// A named pipe blocked the read, and the start, until a writer came.
		{name: "token file a named pipe", cfg: consul.Config{TokenFile: fifo},
			want: []string{`CONSUL_HTTP_TOKEN_FILE="` + fifo + `" is not a regular file (a pipe); point it at a file`}},
		{name: "token file a directory", cfg: consul.Config{TokenFile: dir},
			want: []string{`CONSUL_HTTP_TOKEN_FILE="` + dir + `" is not a regular file (a directory); point it at a file`}},
		{name: "every TLS file a named pipe", cfg: consul.Config{TLSConfig: consul.TLSConfig{CAFile: fifo, CAPath: fifo, CertFile: fifo, KeyFile: fifo}},
			want: []string{
				`CONSUL_CACERT="` + fifo + `" is not a regular file (a pipe)`,
				`CONSUL_CAPATH="` + fifo + `" is not a directory`,
				`CONSUL_CLIENT_CERT="` + fifo + `" is not a regular file (a pipe)`,
				`CONSUL_CLIENT_KEY="` + fifo + `" is not a regular file (a pipe)`,
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() { done <- checkConsulFiles(&tt.cfg) }()
			var got []error
			select {
			case err := <-done:
				if err != nil {
					got = unjoin(err)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("checkConsulFiles did not return within 5s")
			}
			if len(got) != len(tt.want) {
				t.Fatalf("checkConsulFiles = %v, want %d errors: %q", got, len(tt.want), tt.want)
			}
			for i, err := range got {
				if !strings.HasPrefix(err.Error(), tt.want[i]) {
					t.Errorf("error %d = %q, want it to start %q", i, err, tt.want[i])
				}
			}
		})
	}
}

// TestStopSignalWhileTheOthersStopIsDropped: once the signal actor is
// done, the other actors may still take seconds to stop (a deregistration
// Consul does not answer); a SIGTERM then must not kill outrider by its
// default action, which loses the exit status (the app's, in wrap mode).
// Without the subscription kept to the end, this test's process dies.
func TestStopSignalWhileTheOthersStopIsDropped(t *testing.T) {
	a := newAgent(config.Config{}, slog.New(slog.DiscardHandler))
	a.addSignals()
	stopping, release := make(chan struct{}), make(chan struct{})
	a.addContext("slow to stop", func(ctx context.Context) error {
		<-ctx.Done()
		close(stopping)
		<-release
		return nil
	})
	a.group.Add(func() error { return stopStatus{3, "the app exited with status 3"} }, func(error) {})
	code := make(chan int, 1)
	go func() { code <- a.run() }()
	<-stopping
	// The signal must come once the signal actor has returned: while it
	// runs, the signal is its own to take, and this agent has no drain to
	// start: a fixed wait for its return, too short on a loaded machine,
	// would crash the test binary.
	waitFor(t, 10*time.Second, "the signal actor to return", func() bool {
		return !strings.Contains(goroutineStacks(), ".drainOnSignal(")
	})
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the signal's delivery
	close(release)
	if got := <-code; got != 3 {
		t.Errorf("exit status %d, want 3", got)
	}
}

// goroutineStacks is the stack of every goroutine of the test binary.
func goroutineStacks() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// TestConsulConfigFromHostIP: without CONSUL_HTTP_ADDR, HOST_IP names the
// node's client agent, joined to port 8500 as an address must be, IPv6
// in brackets; CONSUL_HTTP_ADDR, when set, wins.
func TestConsulConfigFromHostIP(t *testing.T) {
	tests := []struct {
		name, hostIP, addr, want string
		warning                  string // part of the warning wanted; "": none
	}{
		{"neither", "", "", "localhost:8500", ""},
		{"IPv4 node", "10.2.0.1", "", "10.2.0.1:8500", ""},
		{"IPv6 node", "fd00:1::5", "", "[fd00:1::5]:8500", ""},
		{"not an address", "node-1", "", "localhost:8500",
			`HOST_IP="node-1" is not an IP address, so the Consul agent is looked for at localhost:8500: set HOST_IP to the node's address`},
		{"CONSUL_HTTP_ADDR wins", "10.2.0.1", "consul.service:8500", "consul.service:8500", ""},
		{"CONSUL_HTTP_ADDR wins over a name", "node-1", "consul.service:8500", "consul.service:8500", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("HOST_IP", tt.hostIP)
			t.Setenv("CONSUL_HTTP_ADDR", tt.addr)
			if got := consulConfig().Address; got != tt.want {
				t.Errorf("address %q, want %q", got, tt.want)
			}
			if err := checkConsulAddr(consulConfig().Address); err != nil {
				t.Errorf("the address is refused: %v", err)
			}
			w := hostIPWarning(true)
			if (tt.warning == "") != (w == "") || !strings.Contains(w, tt.warning) {
				t.Errorf("warning %q, want one containing %q", w, tt.warning)
			}
			if w := hostIPWarning(false); w != "" {
				t.Errorf("with no registry, warning %q, want none: HOST_IP names nothing then", w)
			}
		})
	}
}

// TestLoadConfigReportsEveryError: a bad OUTRIDER_PROC_ROOT or
// CONSUL_HTTP_ADDR is reported with the other variables' errors, not
// once they are fixed; Consul's settings are not checked when
// OUTRIDER_REGISTRY is refused, since consul was not asked for.
func TestLoadConfigReportsEveryError(t *testing.T) {
	t.Setenv("CONSUL_HTTP_ADDR", "http://127.0.0.1:8500/")
	tests := []struct {
		registry string
		want     []string
	}{
		{"consul", []string{
			`OUTRIDER_PROBE_PERIOD="5" is not a duration`,
			`OUTRIDER_PROC_ROOT="/nonexistent" cannot be read as procfs`,
			`CONSUL_HTTP_ADDR="http://127.0.0.1:8500/" ends with /`,
		}},
		{"nonee", []string{
			`OUTRIDER_PROBE_PERIOD="5" is not a duration`,
			`OUTRIDER_REGISTRY="nonee" is not one of consul, none`,
			`OUTRIDER_PROC_ROOT="/nonexistent" cannot be read as procfs`,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.registry, func(t *testing.T) {
			env := map[string]string{"OUTRIDER_REGISTRY": tc.registry, "OUTRIDER_SERVICE_NAME": "web", "POD_IP": "10.0.0.7",
				"OUTRIDER_PROBE_PERIOD": "5", "OUTRIDER_PROC_ROOT": "/nonexistent"}
			var stderr strings.Builder
			if _, _, ok := loadConfig(func(k string) string { return env[k] }, "host1", &stderr); ok {
				t.Fatal("loadConfig succeeded")
			}
			lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
			if len(lines) != len(tc.want) {
				t.Fatalf("loadConfig printed %d errors, want %d:\n%s", len(lines), len(tc.want), stderr.String())
			}
			for i, w := range tc.want {
				if !strings.Contains(lines[i], w) {
					t.Errorf("error %d = %q, want one containing %q", i+1, lines[i], w)
				}
			}
		})
	}
}
