package register

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"

	"github.com/outrider-sidecar/outrider/internal/testlog"
)

// fakeConsul is an in-memory Consul agent: it implements Agent, keeps
// what was registered, and can be told to drop its state, fail every
// request as if unreachable, answer with an error code, or take a
// registration and lose its answer.
type fakeConsul struct {
	mu       sync.Mutex
	services map[string]consul.AgentServiceRegistration
	checks   map[string]fakeCheck
	maint    map[string]string // service ID → reason, while in maintenance
	calls    []string          // "register web-1", "update service:web-1 passing", …
	down     bool              // fail every request as a refused connection
	code     int               // when not 0, answer every request with it
	body     string
	regCode  int // when not 0, answer registrations with it
	mntCode  int // when not 0, answer maintenance requests with it
	// lostAnswers makes registrations time out after the fake took them.
	lostAnswers bool
	// aliveBeats counts the updates of liveness checks, which calls leaves out.
	aliveBeats int
	// hanging, when set, receives every check update, which then hangs
	// until its context ends.
	hanging chan struct{}
	// deregisterHangs makes a deregistration wait for its deadline, as
	// from an agent that takes the request and never answers.
	deregisterHangs bool
	// deregisterDelay, when not 0, is how long a deregistration takes to
	// be answered (in real time), or fails when its context ends first.
	deregisterDelay time.Duration
	// updateDelay, when not 0, is how long each check update takes to be
	// answered (in real time), or fails when its context ends first.
	updateDelay time.Duration
	// whileRegistering, when set, runs once a registration is taken or
	// refused, before its answer: what happens while it is in flight.
	whileRegistering func()
	// lookups, when set, receives every look-up of an ID's holder, which
	// then hangs until its context ends, as on an agent that never answers.
	lookups chan struct{}
	// maintCalls, when set, receives every call enabling maintenance,
	// which then hangs until its context ends.
	maintCalls chan struct{}
	// beforeEnable, when set, runs once at the next call enabling
	// maintenance, before it is taken: what happens while it is sent.
	beforeEnable func()
}

type fakeCheck struct {
	Status, Output string
}

// fakeAddr is the fake's address in messages.
const fakeAddr = "http://127.0.0.1:8500"

func newFakeConsul(*testing.T) *fakeConsul {
	return &fakeConsul{
		services: map[string]consul.AgentServiceRegistration{},
		checks:   map[string]fakeCheck{},
		maint:    map[string]string{},
	}
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

// failure is what every request gets while the fake is down or set to
// answer an error; f.mu is held.
func (f *fakeConsul) failure() error {
	switch {
	case f.down:
		return &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	case f.code != 0:
		return consul.StatusError{Code: f.code, Body: f.body}
	}
	return nil
}

func (f *fakeConsul) ServiceRegisterOpts(reg *consul.AgentServiceRegistration, _ consul.ServiceRegisterOpts) error {
	err := f.register(reg)
	f.mu.Lock()
	during := f.whileRegistering
	f.mu.Unlock()
	if during != nil {
		during()
	}
	return err
}

func (f *fakeConsul) register(reg *consul.AgentServiceRegistration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failure(); err != nil {
		return err
	}
	f.calls = append(f.calls, "register "+reg.ID)
	if f.regCode != 0 {
		return consul.StatusError{Code: f.regCode, Body: "registration refused"}
	}
	f.services[reg.ID] = *reg
	// Like Consul, an existing check keeps its state.
	for _, c := range reg.Checks {
		if _, ok := f.checks[c.CheckID]; !ok {
			f.checks[c.CheckID] = fakeCheck{Status: c.Status}
		}
	}
	if f.lostAnswers {
		return &url.Error{Op: "Put", URL: fakeAddr + "/v1/agent/service/register", Err: context.DeadlineExceeded}
	}
	return nil
}

func (f *fakeConsul) UpdateTTLOpts(id, output, status string, q *consul.QueryOptions) error {
	f.mu.Lock()
	hanging, delay := f.hanging, f.updateDelay
	f.mu.Unlock()
	if hanging != nil {
		hanging <- struct{}{}
		<-q.Context().Done()
		return q.Context().Err()
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-q.Context().Done():
			return q.Context().Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failure(); err != nil {
		return err
	}
	if strings.HasSuffix(id, ":outrider") {
		// The liveness check goes with every heartbeat: counted apart, so
		// that the calls tell the probe's check's story.
		f.aliveBeats++
	} else {
		f.calls = append(f.calls, "update "+id+" "+status)
	}
	if _, ok := f.checks[id]; !ok {
		return consul.StatusError{Code: 404, Body: "Unknown check ID " + id}
	}
	f.checks[id] = fakeCheck{Status: status, Output: output}
	return nil
}

// AgentHealthServiceByIDOpts answers as Consul's agent does: the
// registration and its checks, nothing for an unknown ID. It is left out
// of calls, which tell the registration's story.
func (f *fakeConsul) AgentHealthServiceByIDOpts(id string, q *consul.QueryOptions) (string, *consul.AgentServiceChecksInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lookups != nil {
		f.mu.Unlock()
		f.lookups <- struct{}{}
		<-q.Context().Done()
		f.mu.Lock()
		return "", nil, q.Context().Err()
	}
	if err := f.failure(); err != nil {
		return "", nil, err
	}
	reg, ok := f.services[id]
	if !ok {
		return consul.HealthCritical, nil, nil
	}
	info := &consul.AgentServiceChecksInfo{Service: &consul.AgentService{ID: reg.ID, Service: reg.Name, Address: reg.Address, Port: reg.Port}}
	for _, c := range reg.Checks {
		info.Checks = append(info.Checks, &consul.HealthCheck{CheckID: c.CheckID, Status: f.checks[c.CheckID].Status})
	}
	return consul.HealthPassing, info, nil
}

// holdID registers id at address:port as another outrider would, with its
// liveness check alive.
func (f *fakeConsul) holdID(id, address string, port int, alive string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.services[id] = consul.AgentServiceRegistration{ID: id, Name: "web", Address: address, Port: port,
		Checks: consul.AgentServiceChecks{{CheckID: CheckID(id)}, {CheckID: AliveCheckID(id)}}}
	f.checks[CheckID(id)] = fakeCheck{Status: consul.HealthPassing}
	f.checks[AliveCheckID(id)] = fakeCheck{Status: alive}
}

func (f *fakeConsul) ServiceDeregisterOpts(id string, q *consul.QueryOptions) error {
	f.mu.Lock()
	delay := f.deregisterDelay
	f.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-q.Context().Done():
			return &url.Error{Op: "Put", URL: fakeAddr + "/v1/agent/service/deregister/" + id, Err: q.Context().Err()}
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failure(); err != nil {
		return err
	}
	f.calls = append(f.calls, "deregister "+id)
	if f.deregisterHangs {
		f.mu.Unlock()
		<-q.Context().Done()
		f.mu.Lock()
		return &url.Error{Op: "Put", URL: fakeAddr + "/v1/agent/service/deregister/" + id, Err: q.Context().Err()}
	}
	if _, ok := f.services[id]; !ok {
		return consul.StatusError{Code: 404, Body: "Unknown service ID " + id}
	}
	delete(f.services, id)
	delete(f.checks, CheckID(id))
	delete(f.checks, AliveCheckID(id))
	delete(f.maint, id)
	return nil
}

func (f *fakeConsul) EnableServiceMaintenanceOpts(id, reason string, q *consul.QueryOptions) error {
	f.mu.Lock()
	hang, before := f.maintCalls, f.beforeEnable
	f.beforeEnable = nil
	f.mu.Unlock()
	if before != nil {
		before()
	}
	if hang != nil {
		hang <- struct{}{}
		<-q.Context().Done()
		return q.Context().Err()
	}
	return f.maintenance(id, true, reason)
}

func (f *fakeConsul) DisableServiceMaintenanceOpts(id string, _ *consul.QueryOptions) error {
	return f.maintenance(id, false, "")
}

func (f *fakeConsul) maintenance(id string, enable bool, reason string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failure(); err != nil {
		return err
	}
	f.calls = append(f.calls, fmt.Sprintf("maintenance %s %t", id, enable))
	if f.mntCode != 0 {
		return consul.StatusError{Code: f.mntCode, Body: "Permission denied"}
	}
	if _, ok := f.services[id]; !ok {
		return consul.StatusError{Code: 404, Body: "Unknown service ID " + id}
	}
	if enable {
		f.maint[id] = reason
	} else {
		delete(f.maint, id)
	}
	return nil
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

// slowUpdates makes every check update take d to be answered.
func (f *fakeConsul) slowUpdates(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.updateDelay = d
}

// loseRegisterAnswers makes registrations time out after the fake took them.
// hangLookups makes every look-up of an ID's holder hang until its
// context ends; each one is sent on the channel returned as it starts.
func (f *fakeConsul) hangLookups() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lookups = make(chan struct{}, 16)
	return f.lookups
}

// hangMaintenance makes every call enabling maintenance hang until its
// context ends; each one is sent on the channel returned as it starts.
func (f *fakeConsul) hangMaintenance() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.maintCalls = make(chan struct{}, 16)
	return f.maintCalls
}

func (f *fakeConsul) loseRegisterAnswers() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lostAnswers = true
}

func (f *fakeConsul) setMaintenanceError(code int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mntCode = code
}

// duringRegistrations runs fn while each registration is in flight.
func (f *fakeConsul) duringRegistrations(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.whileRegistering = fn
}

func (f *fakeConsul) setRegisterError(code int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.regCode = code
}

// takeAliveBeats returns the liveness check updates since the last call.
func (f *fakeConsul) takeAliveBeats() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.aliveBeats
	f.aliveBeats = 0
	return n
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
