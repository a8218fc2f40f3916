package register

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	stdlog "log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outrider-sidecar/outrider/internal/clock"
	"github.com/outrider-sidecar/outrider/internal/consultest"
	"github.com/outrider-sidecar/outrider/internal/testbin"
	"github.com/outrider-sidecar/outrider/internal/testlog"
	"github.com/outrider-sidecar/outrider/probe"
)

// countingProxy forwards to a real Consul and counts requests by path.
type countingProxy struct {
	*httptest.Server
	mu    sync.Mutex
	count map[string]int
}

func (p *countingProxy) n(prefix string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	total := 0
	for path, n := range p.count {
		if strings.HasPrefix(path, prefix) {
			total += n
		}
	}
	return total
}

func newCountingProxy(t *testing.T, target string) *countingProxy {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &countingProxy{count: map[string]int{}}
	rp := httputil.NewSingleHostReverseProxy(u)
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.count[r.URL.Path]++
		p.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.Close)
	return p
}

// runAgainst runs a registrar of svc against agent on clk until stop is
// called or the test ends; stop returns what Run returned.
func runAgainst(t *testing.T, agent Agent, svc Service, clk *clock.Fake) (r *Registrar, verdicts chan<- probe.Verdict, stop func() error) {
	t.Helper()
	r, err := New(agent, svc, Options{Registerer: prometheus.NewRegistry(), Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	v := make(chan probe.Verdict)
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, v) }()
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() { cancel(); runErr = <-done })
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return r, v, stop
}

// TestRegistrationAgainstConsul runs the registrar against a real Consul
// through a counting proxy: what the catalog and health endpoints show,
// that heartbeats never re-register, and that sending the same
// registration again changes nothing in Consul.
func TestRegistrationAgainstConsul(t *testing.T) {
	srv := consultest.Start(t)
	proxy := newCountingProxy(t, srv.URL())
	clk := clock.NewFake(fakeEpoch)
	svc := testService()
	svc.Address = "127.0.0.1"
	r, verdicts, stop := runAgainst(t, newClient(t, &consul.Config{Address: proxy.Listener.Addr().String(), Scheme: "http"}).Agent(), svc, clk)
	ctx := context.Background()

	clk.NextWait(t)
	c := srv.Client()
	if got := healthStatus(t, c, "web"); got != "critical" {
		t.Errorf("check before any verdict = %q, want critical", got)
	}
	verdicts <- probe.Verdict{Healthy: true, Output: "HTTP 200 OK"}
	clk.NextWait(t)
	entries, _, err := c.Health().Service("web", "", true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("passing instances of web = %d, want 1", len(entries))
	}
	e := entries[0]
	if e.Service.ID != "web-1" || e.Service.Address != "127.0.0.1" || e.Service.Port != 8080 ||
		strings.Join(e.Service.Tags, ",") != "v1,blue" || e.Service.Meta["team"] != "a" {
		t.Errorf("instance = %+v, want web-1 at 127.0.0.1:8080, tags v1,blue, meta team=a", e.Service)
	}
	for _, hc := range e.Checks {
		if hc.CheckID == "service:web-1" && hc.Output != "HTTP 200 OK" {
			t.Errorf("check output = %q, want HTTP 200 OK", hc.Output)
		}
	}

	for range 5 {
		clk.Advance(heartbeat)
		clk.NextWait(t)
	}
	if n := proxy.n("/v1/agent/service/register"); n != 1 {
		t.Errorf("registrations after 6 heartbeats = %d, want 1", n)
	}
	if n := proxy.n("/v1/agent/check/update/"); n != 14 {
		t.Errorf("check updates = %d, want 14: the probe's check and outrider's at each of 7 heartbeats", n)
	}

	// Idempotence: the same registration again leaves the catalog entry
	// and the check exactly as they were.
	before := catalogIndexes(t, c)
	if !r.lock(ctx) {
		t.Fatal("lock")
	}
	err = r.register(ctx, reasonConfig)
	r.unlock()
	if err != nil {
		t.Fatalf("register again: %v", err)
	}
	// Give the agent's anti-entropy the chance to write a change, waiting
	// on Consul's own blocking query rather than a sleep.
	_, _, _ = c.Health().Service("web", "", false, &consul.QueryOptions{WaitIndex: before.health, WaitTime: 2 * time.Second})
	after := catalogIndexes(t, c)
	if after != before {
		t.Errorf("indexes after the same registration = %+v, want unchanged %+v", after, before)
	}
	if got := healthStatus(t, c, "web"); got != "passing" {
		t.Errorf("check after the same registration = %q, want still passing", got)
	}
	if n := proxy.n("/v1/agent/service/deregister/"); n != 0 {
		t.Errorf("deregistrations = %d, want 0", n)
	}

	if err := stop(); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	if svcs, _, err := c.Catalog().Service("web", "", nil); err != nil || len(svcs) != 0 {
		t.Errorf("catalog after Run returned = %d instances (err %v), want none", len(svcs), err)
	}
}

// TestEarlierMaintenanceIsClearedAgainstConsul: Consul keeps a service's
// maintenance across a registration in place, so one that an earlier run
// left (it was killed while in maintenance) must be taken off by the next
// run, which wants none.
func TestEarlierMaintenanceIsClearedAgainstConsul(t *testing.T) {
	srv := consultest.Start(t)
	c := srv.Client()
	svc := testService()
	svc.Address = "127.0.0.1"
	if err := c.Agent().ServiceRegister(&consul.AgentServiceRegistration{
		ID: svc.ID, Name: svc.Name, Address: svc.Address, Port: svc.Port,
		Check: &consul.AgentServiceCheck{CheckID: CheckID(svc.ID), TTL: "30s", Status: consul.HealthPassing},
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.Agent().EnableServiceMaintenance(svc.ID, "deploy (earlier run)"); err != nil {
		t.Fatal(err)
	}

	clk := clock.NewFake(fakeEpoch)
	r, verdicts, _ := runAgainst(t, c.Agent(), svc, clk)
	clk.NextWait(t)
	verdicts <- probe.Verdict{Healthy: true, Output: "HTTP 200 OK"}
	clk.NextWait(t)

	checks, err := c.Agent().Checks()
	if err != nil {
		t.Fatal(err)
	}
	if hc, ok := checks["_service_maintenance:"+svc.ID]; ok {
		t.Errorf("consul still holds the earlier run's maintenance (%q), want it cleared", hc.Notes)
	}
	entries, _, err := c.Health().Service(svc.Name, "", true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("passing instances of %s = %d, want 1", svc.Name, len(entries))
	}
	if s := r.Status(); s.Maintenance {
		t.Errorf("status = %+v, want maintenance off", s)
	}
}

type indexes struct {
	service, check, health uint64
}

func catalogIndexes(t *testing.T, c *consul.Client) indexes {
	t.Helper()
	entries, meta, err := c.Health().Service("web", "", false, nil)
	if err != nil || len(entries) != 1 {
		t.Fatalf("health of web: %d entries, err %v", len(entries), err)
	}
	ix := indexes{service: entries[0].Service.ModifyIndex, health: meta.LastIndex}
	for _, hc := range entries[0].Checks {
		if hc.CheckID == "service:web-1" {
			ix.check = hc.ModifyIndex
		}
	}
	return ix
}

func healthStatus(t *testing.T, c *consul.Client, service string) string {
	t.Helper()
	checks, _, err := c.Health().Checks(service, nil)
	if err != nil {
		t.Fatalf("checks of %s: %v", service, err)
	}
	for _, hc := range checks {
		if hc.CheckID == CheckID(hc.ServiceID) {
			return hc.Status
		}
	}
	return "absent"
}

// TestWrongTokenAgainstConsul checks that Consul's refusal of a token is
// classified as such, so that it is logged as an ACL problem.
func TestWrongTokenAgainstConsul(t *testing.T) {
	srv := consultest.Start(t, consultest.WithACL("root-token-for-tests"))
	r, err := New(newClient(t, &consul.Config{Address: srv.HTTPAddr, Token: "not-a-token"}).Agent(), testService(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = r.register(context.Background(), reasonStart)
	if err == nil {
		t.Fatalf("registration with a wrong token succeeded")
	}
	if got := classify(err); got != linkUnknownToken {
		t.Errorf("classify(%v) = %s, want %s", err, got, linkUnknownToken)
	}
	var se consul.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusForbidden {
		t.Errorf("error = %v, want Consul's 403", err)
	}
	if !notTaken(err) {
		t.Errorf("notTaken(%v) = false, want true: Consul refused the registration", err)
	}
}

// TestNotTaken checks, with consul/api's own errors, which failures of a
// registration prove that Consul does not hold it.
func TestNotTaken(t *testing.T) {
	reg := &consul.AgentServiceRegistration{ID: "web-1", Name: "web"}
	for _, tc := range []struct {
		name string
		err  func(t *testing.T) error
		want bool
	}{
		{name: "nothing listens", want: true, err: func(t *testing.T) error {
			a := newClient(t, &consul.Config{Address: testbin.RefusingAddr(t)}).Agent()
			return a.ServiceRegisterOpts(reg, consul.ServiceRegisterOpts{})
		}},
		{name: "refused with a 4xx", want: true, err: func(*testing.T) error {
			return consul.StatusError{Code: http.StatusBadRequest, Body: "Invalid Service Meta"}
		}},
		{name: "a 5xx", want: false, err: func(*testing.T) error {
			return consul.StatusError{Code: http.StatusInternalServerError, Body: "No cluster leader"}
		}},
		{name: "no answer after the request arrived", want: false, err: func(t *testing.T) error {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
				// Read whole, so that the server notices the client leave.
				_, _ = io.Copy(io.Discard, r.Body)
				cancel()
				<-r.Context().Done()
			}))
			t.Cleanup(srv.Close)
			a := newClient(t, &consul.Config{Address: srv.URL}).Agent()
			return a.ServiceRegisterOpts(reg, consul.ServiceRegisterOpts{}.WithContext(ctx))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.err(t)
			if err == nil {
				t.Fatalf("registration succeeded, want an error")
			}
			if got := notTaken(err); got != tc.want {
				t.Errorf("notTaken(%v) = %t, want %t", err, got, tc.want)
			}
		})
	}
}

// TestSecondInstanceWithTheSameIDAgainstConsul: two outriders given one
// service ID, at different addresses (two instances of a service on one
// host, with the default ID). The second leaves the ID to the first, which
// stays registered and passing, rather than take its entry over.
func TestSecondInstanceWithTheSameIDAgainstConsul(t *testing.T) {
	srv := consultest.Start(t)
	agent := srv.Client().Agent()
	first, second := testService(), testService()
	first.Address, first.Port = "127.0.0.1", 8080
	second.Address, second.Port = "127.0.0.1", 8081

	clk1 := clock.NewFake(fakeEpoch)
	_, verdicts1, _ := runAgainst(t, agent, first, clk1)
	clk1.NextWait(t)
	verdicts1 <- probe.Verdict{Healthy: true}
	clk1.NextWait(t)

	clk2 := clock.NewFake(fakeEpoch)
	r2, verdicts2, stop2 := runAgainst(t, agent, second, clk2)
	clk2.NextWait(t)
	verdicts2 <- probe.Verdict{Healthy: true}
	clk2.NextWait(t)

	entries, _, err := srv.Client().Health().Service("web", "", true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Service.Port != 8080 {
		t.Fatalf("passing instances of web = %+v, want the first one alone, at port 8080", entries)
	}
	if st := r2.Status(); st.Registered {
		t.Errorf("second instance's status = %+v, want not registered", st)
	}
	// The second one's stop leaves the first registered.
	if err := stop2(); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	if svcs, _, err := srv.Client().Catalog().Service("web", "", nil); err != nil || len(svcs) != 1 || svcs[0].ServicePort != 8080 {
		t.Errorf("catalog after the second one stopped = %+v (err %v), want the first one", svcs, err)
	}
}

// TestTLSFailureAgainstConsul: a Consul whose certificate does not verify
// (a CA outrider was not given, a name not in the certificate) is named as
// a TLS failure, with the variables to set, not as unreachable; the
// instance was never sent, so the stop has nothing to deregister. Consul
// is a real one behind a TLS listener on loopback; with its CA, outrider
// registers through it.
func TestTLSFailureAgainstConsul(t *testing.T) {
	srv := consultest.Start(t)
	target, err := url.Parse(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewUnstartedServer(httputil.NewSingleHostReverseProxy(target))
	front.Config.ErrorLog = stdlog.New(io.Discard, "", 0) // the refused handshakes
	front.StartTLS()
	t.Cleanup(front.Close)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: front.Certificate().Raw})
	if err := os.WriteFile(caFile, ca, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		tls  consul.TLSConfig
		// wantLog is in the log line, wantErr in /status's last_error;
		// "" for a registration that goes through.
		wantLog, wantErr string
	}{
		{name: "CA not given", wantLog: "CONSUL_CACERT or CONSUL_CAPATH", wantErr: "certificate signed by unknown authority"},
		{name: "name not in the certificate", tls: consul.TLSConfig{CAFile: caFile, Address: "consul.example"},
			wantLog: "CONSUL_TLS_SERVER_NAME", wantErr: "consul.example"},
		{name: "CA given", tls: consul.TLSConfig{CAFile: caFile}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, buf := firstAttempts(t, &consul.Config{Address: front.Listener.Addr().String(), Scheme: "https", TLSConfig: tc.tls}, front.URL)
			if t.Failed() || tc.wantLog == "" && !s.Registered || tc.wantLog != "" && s.Registered {
				t.Logf("registrar log:\n%s", buf.String())
			}
			if tc.wantLog == "" {
				if !s.Registered || s.Consul != "ok" {
					t.Errorf("status = %+v, want registered through the TLS listener, consul ok", s)
				}
				return
			}
			if s.Consul != "untrusted" || !strings.Contains(s.LastError, tc.wantErr) {
				t.Errorf("status = %+v, want consul untrusted, last_error naming %q", s, tc.wantErr)
			}
			if n := buf.Count("consul's TLS certificate did not verify"); n != 1 || !strings.Contains(buf.String(), tc.wantLog) {
				t.Errorf("logged the TLS failure %d times, want once, naming %s:\n%s", n, tc.wantLog, buf.String())
			}
			if n := buf.Count("consul unreachable"); n != 0 {
				t.Errorf("logged consul unreachable %d times for a certificate that does not verify", n)
			}
			if n := buf.Count("nothing to deregister"); n != 1 {
				t.Errorf("the stop did not say there was nothing to deregister:\n%s", buf.String())
			}
		})
	}
}

// firstAttempts runs a registrar against the Consul that cfg names until
// its second attempt, and stops it; it returns the status before the stop
// and the log.
func firstAttempts(t *testing.T, cfg *consul.Config, addr string) (Status, *testlog.Buffer) {
	t.Helper()
	log, buf := newTestLogger()
	clk := clock.NewFake(fakeEpoch)
	svc := testService()
	svc.ID = "web-" + strings.ReplaceAll(t.Name(), "/", "-")
	r, err := New(newClient(t, cfg).Agent(), svc, Options{Registerer: prometheus.NewRegistry(), Clock: clk, Log: log,
		ConsulAddr: addr})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, nil) }()
	d := clk.NextWait(t).D
	clk.Advance(d)
	clk.NextWait(t)
	s := r.Status()
	cancel()
	<-done
	return s, buf
}

// TestTLSMismatchAgainstConsul: a Consul that refuses the TLS handshake
// (it wants a client certificate outrider did not send, or does not trust
// the one it sent), or a scheme that is not the one Consul serves, is
// named for what it is, with the variables to set, not as unreachable or
// rejected; no request reached Consul, so the stop has nothing to
// deregister. Consul is a real one, behind a TLS listener on loopback for
// the cases that need TLS.
func TestTLSMismatchAgainstConsul(t *testing.T) {
	srv := consultest.Start(t)
	target, err := url.Parse(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	// mTLS asks for a client certificate signed by a CA of the system's,
	// which none of this test's is.
	mTLS := httptest.NewUnstartedServer(httputil.NewSingleHostReverseProxy(target))
	mTLS.Config.ErrorLog = stdlog.New(io.Discard, "", 0) // the refused handshakes
	mTLS.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert}
	mTLS.StartTLS()
	t.Cleanup(mTLS.Close)
	// A client certificate: the listener's own, which it does not trust
	// as one.
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")
	key, err := x509.MarshalPKCS8PrivateKey(mTLS.TLS.Certificates[0].PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: mTLS.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}), 0o600); err != nil {
		t.Fatal(err)
	}
	tlsFront := httptest.NewUnstartedServer(httputil.NewSingleHostReverseProxy(target))
	tlsFront.Config.ErrorLog = stdlog.New(io.Discard, "", 0)
	tlsFront.StartTLS()
	t.Cleanup(tlsFront.Close)

	mTLSAddr := mTLS.Listener.Addr().String()
	insecure := consul.TLSConfig{InsecureSkipVerify: true} // Consul's certificate is not what these cases are about
	for _, tc := range []struct {
		name string
		cfg  consul.Config
		// wantState is /status's consul, wantLog in the log line,
		// wantErr in last_error.
		wantState, wantLog, wantErr string
	}{
		{name: "no client certificate", cfg: consul.Config{Address: mTLSAddr, Scheme: "https", TLSConfig: insecure},
			wantState: "tls_refused", wantLog: "consul requires a client certificate (verify_incoming): set CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY",
			wantErr: "tls: certificate required"},
		{name: "client certificate not trusted", cfg: consul.Config{Address: mTLSAddr, Scheme: "https",
			TLSConfig: consul.TLSConfig{InsecureSkipVerify: true, CertFile: certFile, KeyFile: keyFile}},
			wantState: "tls_refused", wantLog: "consul did not accept outrider's client certificate",
			wantErr: "tls: unknown certificate authority"},
		{name: "http to an https consul", cfg: consul.Config{Address: tlsFront.Listener.Addr().String(), Scheme: "http"},
			wantState: "wrong_scheme", wantLog: "set CONSUL_HTTP_ADDR to https://… or CONSUL_HTTP_SSL=true",
			wantErr: "Client sent an HTTP request to an HTTPS server"},
		{name: "https to an http consul", cfg: consul.Config{Address: srv.HTTPAddr, Scheme: "https", TLSConfig: insecure},
			wantState: "wrong_scheme", wantLog: "set CONSUL_HTTP_ADDR to http://… and CONSUL_HTTP_SSL=false",
			wantErr: "server gave HTTP response to HTTPS client"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, buf := firstAttempts(t, &tc.cfg, tc.cfg.Scheme+"://"+tc.cfg.Address)
			if s.Consul != tc.wantState || !strings.Contains(s.LastError, tc.wantErr) || s.Registered {
				t.Errorf("status = %+v, want consul %s, last_error naming %q", s, tc.wantState, tc.wantErr)
			}
			if n := buf.Count(tc.wantLog); n != 1 {
				t.Errorf("logged %q %d times, want once:\n%s", tc.wantLog, n, buf.String())
			}
			for _, generic := range []string{"consul unreachable", "consul rejected a request"} {
				if n := buf.Count(generic); n != 0 {
					t.Errorf("logged %q %d times:\n%s", generic, n, buf.String())
				}
			}
			if n := buf.Count("nothing to deregister"); n != 1 {
				t.Errorf("the stop did not say there was nothing to deregister:\n%s", buf.String())
			}
		})
	}
}
