package register

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"

	"github.com/outrider-sidecar/outrider/internal/testlog"
)

// fakeConsul is a loopback HTTP server that answers the four agent
// endpoints the registrar uses, keeps what was registered, and can be told
// to drop its state, refuse connections or answer with an error code.
type fakeConsul struct {
	*httptest.Server

	mu       sync.Mutex
	services map[string]consul.AgentServiceRegistration
	checks   map[string]fakeCheck
	maint    map[string]string // service ID → reason, while in maintenance
	calls    []string          // "register web-1", "update service:web-1 passing", …
	down     bool              // close every connection without answering
	code     int               // when not 0, answer every request with it
	body     string
	regCode  int // when not 0, answer registrations with it
	mntCode  int // when not 0, answer maintenance requests with it
	// hanging, when set, receives every check update, which then hangs
	// until its client gives up.
	hanging chan struct{}
}

type fakeCheck struct {
	Status, Output string
}

func newFakeConsul(t *testing.T) *fakeConsul {
	f := &fakeConsul{
		services: map[string]consul.AgentServiceRegistration{},
		checks:   map[string]fakeCheck{},
		maint:    map[string]string{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /v1/agent/service/register", f.register)
	mux.HandleFunc("PUT /v1/agent/check/update/{id...}", f.update)
	mux.HandleFunc("PUT /v1/agent/service/deregister/{id...}", f.deregister)
	mux.HandleFunc("PUT /v1/agent/service/maintenance/{id...}", f.maintenance)
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		down, code, body := f.down, f.code, f.body
		f.mu.Unlock()
		switch {
		case down:
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
		case code != 0:
			http.Error(w, body, code)
		default:
			mux.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(f.Close)
	return f
}

// newClient builds a consul/api client for cfg, failing the test if it cannot.
func newClient(t *testing.T, cfg *consul.Config) *consul.Client {
	t.Helper()
	c, err := consul.NewClient(cfg)
	if err != nil {
		t.Fatalf("consul client for %s: %v", cfg.Address, err)
	}
	return c
}

func (f *fakeConsul) config() *consul.Config {
	return &consul.Config{Address: f.Listener.Addr().String(), Scheme: "http"}
}

func (f *fakeConsul) register(w http.ResponseWriter, r *http.Request) {
	var reg consul.AgentServiceRegistration
	if err := json.NewDecoder(r.Body).Decode(&reg); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "register "+reg.ID)
	if f.regCode != 0 {
		http.Error(w, "registration refused", f.regCode)
		return
	}
	f.services[reg.ID] = reg
	// Like Consul, an existing check keeps its state.
	if _, ok := f.checks[reg.Check.CheckID]; !ok {
		f.checks[reg.Check.CheckID] = fakeCheck{Status: reg.Check.Status}
	}
}

func (f *fakeConsul) update(w http.ResponseWriter, r *http.Request) {
	var u struct{ Status, Output string }
	if err := json.NewDecoder(r.Body).Decode(&u); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	id := r.PathValue("id")
	f.mu.Lock()
	hanging := f.hanging
	f.mu.Unlock()
	if hanging != nil {
		hanging <- struct{}{}
		<-r.Context().Done()
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "update "+id+" "+u.Status)
	if _, ok := f.checks[id]; !ok {
		http.Error(w, "Unknown check ID "+id, http.StatusNotFound)
		return
	}
	f.checks[id] = fakeCheck{Status: u.Status, Output: u.Output}
}

func (f *fakeConsul) deregister(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "deregister "+id)
	if _, ok := f.services[id]; !ok {
		http.Error(w, "Unknown service ID "+id, http.StatusNotFound)
		return
	}
	delete(f.services, id)
	delete(f.checks, CheckID(id))
	delete(f.maint, id)
}

func (f *fakeConsul) maintenance(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	enable := r.URL.Query().Get("enable") == "true"
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "maintenance "+id+" "+r.URL.Query().Get("enable"))
	if f.mntCode != 0 {
		http.Error(w, "Permission denied", f.mntCode)
		return
	}
	if _, ok := f.services[id]; !ok {
		http.Error(w, "Unknown service ID "+id, http.StatusNotFound)
		return
	}
	if enable {
		f.maint[id] = r.URL.Query().Get("reason")
	} else {
		delete(f.maint, id)
	}
}

// lose drops every registration, like a dev agent restarted empty.
func (f *fakeConsul) lose() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.services)
	clear(f.checks)
	clear(f.maint)
}

func (f *fakeConsul) setDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
}

func (f *fakeConsul) setError(code int, body string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.code, f.body = code, body
}

// hangUpdates makes check updates hang; it returns the channel told of each.
func (f *fakeConsul) hangUpdates() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hanging = make(chan struct{}, 10)
	return f.hanging
}

func (f *fakeConsul) setMaintenanceError(code int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mntCode = code
}

func (f *fakeConsul) setRegisterError(code int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.regCode = code
}

// takeCalls returns the calls since the last takeCalls.
func (f *fakeConsul) takeCalls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

func (f *fakeConsul) check(id string) (fakeCheck, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.checks[id]
	return c, ok
}

func (f *fakeConsul) service(id string) (consul.AgentServiceRegistration, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.services[id]
	return s, ok
}

func (f *fakeConsul) maintReason(id string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.maint[id]
	return r, ok
}

// fakeEpoch is where the tests' fake clocks start.
var fakeEpoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func newTestLogger() (*slog.Logger, *testlog.Buffer) {
	buf := &testlog.Buffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}
