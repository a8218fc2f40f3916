package probe

import (
	"bufio"
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outrider-sidecar/outrider/internal/testbin"
	"github.com/outrider-sidecar/outrider/internal/version"
)

// mustSpec parses raw or fails the test.
func mustSpec(t *testing.T, raw string) Spec {
	t.Helper()
	s, err := ParseSpec(raw)
	if err != nil {
		t.Fatalf("ParseSpec(%q): %v", raw, err)
	}
	return s
}

// probeWithin runs p on spec with a deadline of timeout.
// A timeout of 0 means a generous 10 s: only a bound on a hung test.
func probeWithin(p Prober, spec Spec, timeout time.Duration) Result {
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := withTimeout(context.Background(), timeout)
	defer cancel()
	return p(ctx, spec)
}

// checkResult compares a result's outcome and reason with what a test wants.
// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

func checkResult(t *testing.T, got Result, want Outcome, wantOutput ...string) {
	t.Helper()
	if got.Outcome != want {
		t.Errorf("outcome = %s (%q), want %s", got.Outcome, got.Output, want)
	}
	if got.Outcome != Success && got.Output == "" {
		t.Errorf("outcome %s with an empty output", got.Outcome)
	}
	for _, w := range wantOutput {
		if !strings.Contains(got.Output, w) {
			t.Errorf("output = %q, want it to contain %q", got.Output, w)
		}
	}
	if got.Duration <= 0 {
		t.Errorf("duration = %s, want > 0", got.Duration)
	}
}

func TestHTTPProber(t *testing.T) {
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("fine\n")) })
	mux.HandleFunc("/created", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusCreated) })
	mux.HandleFunc("/399", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(399) })
	mux.HandleFunc("/400", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusBadRequest) })
	mux.HandleFunc("/down", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "database\tunreachable\n", http.StatusServiceUnavailable)
	})
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ok", http.StatusFound) })
	mux.HandleFunc("/moved-bad", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/down", http.StatusFound) })
	mux.HandleFunc("/loop", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/loop", http.StatusFound) })
	mux.HandleFunc("/big", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte(strings.Repeat("x", 1<<20)))
	})
	mux.HandleFunc("/hang", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	closed := httptest.NewServer(mux)
	closedURL := closed.URL
	closed.Close()

	passwordSpec := mustSpec(t, strings.Replace(srv.URL, "://", "://user:hunter2@", 1)+"/down")
	if s := passwordSpec.String(); strings.Contains(s, "hunter2") {
		t.Errorf("Spec.String() = %q shows the password", s)
	}
	tests := []struct {
		name       string
		spec       Spec
		timeout    time.Duration
		want       Outcome
		wantOutput []string
	}{
		{name: "200", spec: mustSpec(t, srv.URL+"/ok"), want: Success, wantOutput: []string{"200 OK"}},
		{name: "201", spec: mustSpec(t, srv.URL+"/created"), want: Success},
		{name: "399 is still success", spec: mustSpec(t, srv.URL+"/399"), want: Success},
		{name: "same-host redirect followed", spec: mustSpec(t, srv.URL+"/moved"), want: Success, wantOutput: []string{"200 OK"}},
		{name: "same-host redirect to a failure", spec: mustSpec(t, srv.URL+"/moved-bad"), want: Failure, wantOutput: []string{"503"}},
		{name: "redirect loop", spec: mustSpec(t, srv.URL+"/loop"), want: Failure, wantOutput: []string{"stopped after 10 redirects"}},
		{name: "400", spec: mustSpec(t, srv.URL+"/400"), want: Failure, wantOutput: []string{"400 Bad Request"}},
		{name: "503 with the body as reason", spec: mustSpec(t, srv.URL+"/down"), want: Failure,
			wantOutput: []string{"GET " + srv.URL + "/down: 503 Service Unavailable: database unreachable"}},
		{name: "404", spec: mustSpec(t, srv.URL+"/nothing"), want: Failure, wantOutput: []string{"404 Not Found"}},
		{name: "big body is cut", spec: mustSpec(t, srv.URL+"/big"), want: Failure, wantOutput: []string{"500", "…"}},
		{name: "connection refused", spec: mustSpec(t, closedURL+"/ok"), want: Failure, wantOutput: []string{"connection refused"}},
		{name: "timeout", spec: mustSpec(t, srv.URL+"/hang"), timeout: 100 * time.Millisecond, want: Timeout,
			wantOutput: []string{"no answer within "}},
		{name: "no URL", spec: Spec{Kind: KindHTTP}, want: Error, wantOutput: []string{"without a URL"}},
		{name: "not an http spec", spec: mustSpec(t, "tcp://127.0.0.1:1"), want: Error},
		{name: "password never shown", spec: passwordSpec,
			want: Failure, wantOutput: []string{"user:xxxxx@"}},
	}
	p := newHTTPProber()
	t.Cleanup(p.close)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := probeWithin(p.probe, tc.spec, tc.timeout)
			checkResult(t, got, tc.want, tc.wantOutput...)
			if strings.Contains(got.Output, "hunter2") {
				t.Errorf("output shows the password: %q", got.Output)
			}
			if tc.want == Timeout && got.Duration > 5*time.Second {
				t.Errorf("a %s timeout took %s", tc.timeout, got.Duration)
			}
		})
	}
}

func TestHTTPProberRefusesRedirectOffHost(t *testing.T) {
	var elsewhereHits atomic.Int32
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		elsewhereHits.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(elsewhere.Close)
	// The same server under another host name: localhost instead of 127.0.0.1.
	u, _ := url.Parse(elsewhere.URL)
	offHost := "http://localhost:" + u.Port() + "/down"
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		target := elsewhere.URL + "/down"
		if r.URL.Path == "/to-localhost" {
			target = offHost
		}
		http.Redirect(w, r, target, http.StatusFound)
	}))
	t.Cleanup(app.Close)

	tests := []struct {
		name       string
		path       string
		want       Outcome
		wantOutput []string
		wantHits   int32
	}{
		// Another host name is another host: the probe takes the 302 as
		// its answer, as the kubelet does, and never asks that host.
		{name: "other host name", path: "/to-localhost", want: Success,
			wantOutput: []string{"302 Found", "redirect to " + offHost + " not followed"}, wantHits: 0},
		// Another port on the same host name is the same host, as for the kubelet.
		{name: "other port, same host name", path: "/to-other-port", want: Failure,
			wantOutput: []string{"503"}, wantHits: 1},
	}
	p := newHTTPProber()
	t.Cleanup(p.close)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := elsewhereHits.Load()
			checkResult(t, probeWithin(p.probe, mustSpec(t, app.URL+tc.path), 10*time.Second), tc.want, tc.wantOutput...)
			if got := elsewhereHits.Load() - before; got != tc.wantHits {
				t.Errorf("the redirect target got %d requests, want %d", got, tc.wantHits)
			}
		})
	}
}

func TestHTTPProberSendsHeaders(t *testing.T) {
	type seen struct {
		ua, accept, host, auth, custom string
	}
	got := make(chan seen, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.UserAgent(), r.Header.Get("Accept"), r.Host, r.Header.Get("Authorization"), r.Header.Get("X-Probe")}
	}))
	t.Cleanup(srv.Close)
	hdr, err := ParseHeaders("Host: app.example,Authorization: Bearer t0k3n,X-Probe: yes")
	if err != nil {
		t.Fatal(err)
	}
	spec := mustSpec(t, srv.URL+"/healthz")
	spec.Header = hdr

	p := newHTTPProber()
	t.Cleanup(p.close)
	res := probeWithin(p.probe, spec, 10*time.Second)
	checkResult(t, res, Success)
	want := seen{ua: version.UserAgent(), accept: "*/*", host: "app.example", auth: "Bearer t0k3n", custom: "yes"}
	s := <-got
	if s != want {
		t.Errorf("server saw %+v, want %+v", s, want)
	}
	if !strings.HasPrefix(s.ua, "outrider/") {
		t.Errorf("User-Agent = %q, want outrider/<version>", s.ua)
	}
	if strings.Contains(res.Output, "t0k3n") {
		t.Errorf("output shows a header value: %q", res.Output)
	}
}

// TestHTTPProberMasksCredentialsTheAppQuotes: an app that repeats the
// credentials it refused, in its body or in a malformed answer, does not
// put them in the output, which goes to the Consul check that whoever
// reads the catalog sees.
func TestHTTPProberMasksCredentialsTheAppQuotes(t *testing.T) {
	// The app answers with the request's Authorization header: in a 401's
	// body for /body, in its status line for /status.
	addr := testbin.Serve(t, func(c net.Conn) {
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		auth := req.Header.Get("Authorization")
		if req.URL.Path == "/status" {
			_, _ = io.WriteString(c, "HTTP/1.1 "+strings.ReplaceAll(auth, " ", "-")+" OK\r\n\r\n")
			return
		}
		body := "refused Authorization: " + auth + "; want another token than " + strings.TrimPrefix(auth, "Bearer ")
		_, _ = io.WriteString(c, "HTTP/1.1 401 Unauthorized\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
	})
	base := "http://" + addr
	tests := []struct {
		name, url, headers string
		secrets            []string
		keep               string // what the output still shows
	}{
		{"body", base + "/body", "Authorization: Bearer t0k3n-s3cret,X-Probe: yes", []string{"t0k3n-s3cret"}, "refused Authorization: ********; want another token than ********"},
		{"status line", base + "/status", "Authorization: Bearer t0k3n-s3cret", []string{"t0k3n-s3cret"}, `malformed HTTP status code "Bearer-********"`},
		{"URL password", "http://probe:pa55w0rd-s3cret@" + addr + "/body", "",
			[]string{"pa55w0rd-s3cret", base64.StdEncoding.EncodeToString([]byte("probe:pa55w0rd-s3cret"))}, "refused Authorization: Basic ********"},
		{"short values are kept", base + "/body", "Authorization: 12345", nil, "refused Authorization: 12345"},
	}
	p := newHTTPProber()
	t.Cleanup(p.close)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := mustSpec(t, tt.url)
			if tt.headers != "" {
				var err error
				if spec.Header, err = ParseHeaders(tt.headers); err != nil {
					t.Fatal(err)
				}
			}
			res := probeWithin(p.probe, spec, 0)
			checkResult(t, res, Failure, tt.keep)
			for _, s := range tt.secrets {
				if strings.Contains(res.Output, s) {
					t.Errorf("output shows %q: %q", s, res.Output)
				}
			}
		})
	}
}

// TestHTTPProberLeavesOutEmptyDefaults checks that a User-Agent or an
// Accept set empty is not sent at all, as the kubelet does.
func TestHTTPProberLeavesOutEmptyDefaults(t *testing.T) {
	got := make(chan http.Header, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { got <- r.Header }))
	t.Cleanup(srv.Close)
	p := newHTTPProber()
	t.Cleanup(p.close)

	tests := []struct {
		headers    string
		wantAccept []string // nil: not sent
		wantUA     []string
	}{
		{headers: "", wantAccept: []string{"*/*"}, wantUA: []string{version.UserAgent()}},
		{headers: "Accept:", wantUA: []string{version.UserAgent()}},
		{headers: "User-Agent:", wantAccept: []string{"*/*"}},
		{headers: "Accept:,User-Agent:"},
		{headers: "Accept: application/json,User-Agent: probe/1", wantAccept: []string{"application/json"}, wantUA: []string{"probe/1"}},
		{headers: "Accept: application/json, text/plain,User-Agent: probe/1", wantAccept: []string{"application/json, text/plain"}, wantUA: []string{"probe/1"}},
	}
	for _, tc := range tests {
		t.Run(cmp.Or(tc.headers, "none"), func(t *testing.T) {
			hdr, err := ParseHeaders(tc.headers)
			if err != nil {
				t.Fatal(err)
			}
			spec := mustSpec(t, srv.URL+"/healthz")
			spec.Header = hdr
			checkResult(t, probeWithin(p.probe, spec, 10*time.Second), Success)
			h := <-got
			if !slices.Equal(h["Accept"], tc.wantAccept) || !slices.Equal(h["User-Agent"], tc.wantUA) {
				t.Errorf("the app got Accept %q and User-Agent %q, want %q and %q", h["Accept"], h["User-Agent"], tc.wantAccept, tc.wantUA)
			}
		})
	}
}

// TestHTTPProberHostHeader checks that a Host header reaches the app as
// written, or is refused when parsed: Go's client replaces a Host it cannot
// send with an empty one, which the app would answer all the same.
func TestHTTPProberHostHeader(t *testing.T) {
	got := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { got <- r.Host }))
	t.Cleanup(srv.Close)
	p := newHTTPProber()
	t.Cleanup(p.close)

	tests := []struct {
		host     string
		wantSeen string // when not host
		wantErr  bool
	}{
		{host: "app.example"},
		{host: "bücher.example", wantSeen: "xn--bcher-kva.example"},
		{host: "app.example:8080"},
		{host: "[::1]:8080"},
		{host: "10.0.0.1"},
		{host: "https://app.example", wantErr: true},
		{host: "app.example/healthz", wantErr: true},
		{host: "app example", wantErr: true},
		{host: "probe@app.example", wantErr: true},
		{host: `app"example`, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.host, func(t *testing.T) {
			hdr, err := ParseHeaders("X-Probe: yes,Host: " + tc.host)
			if tc.wantErr {
				want := "item 2 has a Host value that is not a host or host:port, such as app.example:8080"
				if err == nil || err.Error() != want {
					t.Fatalf("ParseHeaders: error %v, want %q", err, want)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseHeaders: %v", err)
			}
			spec := mustSpec(t, srv.URL+"/healthz")
			spec.Header = hdr
			checkResult(t, probeWithin(p.probe, spec, 10*time.Second), Success)
			want := cmp.Or(tc.wantSeen, tc.host)
			if h := <-got; h != want {
				t.Errorf("the app got Host %q, want %q", h, want)
			}
		})
	}
}

// TestHTTPProberOpensAConnectionPerProbe checks that no connection is
// kept from one probe to the next, as with the kubelet.
func TestHTTPProberOpensAConnectionPerProbe(t *testing.T) {
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(strings.Repeat("ok", 100)))
	}))
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			mu.Lock()
			conns[c] = true
			mu.Unlock()
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)

	p := newHTTPProber()
	t.Cleanup(p.close)
	for range 5 {
		checkResult(t, probeWithin(p.probe, mustSpec(t, srv.URL+"/"), 10*time.Second), Success)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(conns) != 5 {
		t.Errorf("5 probes opened %d connections, want 5", len(conns))
	}
}

// TestHTTPProberSeesAnAppThatStopsAccepting checks that an app whose
// listener closed fails its next probe, though it still serves the
// connections it has: no client could reach it.
func TestHTTPProberSeesAnAppThatStopsAccepting(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(srv.Close)
	p := newHTTPProber()
	t.Cleanup(p.close)
	spec := mustSpec(t, srv.URL+"/healthz")
	checkResult(t, probeWithin(p.probe, spec, 10*time.Second), Success)

	_ = srv.Listener.Close()
	for range 3 {
		checkResult(t, probeWithin(p.probe, spec, 10*time.Second), Failure, "refused")
	}
}

func TestHTTPSProber(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	// The refused handshake is the point of the test, not news.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	tests := []struct {
		name       string
		insecure   bool
		want       Outcome
		wantOutput []string
	}{
		{name: "certificate verified", insecure: false, want: Failure,
			wantOutput: []string{"certificate", "set OUTRIDER_PROBE_INSECURE=true to probe without verifying"}},
		{name: "insecure skips verification", insecure: true, want: Success, wantOutput: []string{"200 OK"}},
	}
	// An http probe the app redirects to https on the same host verifies
	// the certificate too.
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, srv.URL+r.URL.Path, http.StatusMovedPermanently)
	}))
	t.Cleanup(redirect.Close)
	p := newHTTPProber()
	t.Cleanup(p.close)
	for _, tc := range tests {
		for _, url := range []string{srv.URL, redirect.URL} {
			t.Run(tc.name+" "+url[:strings.Index(url, ":")], func(t *testing.T) {
				spec := mustSpec(t, url+"/healthz")
				spec.Insecure = tc.insecure
				checkResult(t, probeWithin(p.probe, spec, 10*time.Second), tc.want, tc.wantOutput...)
			})
		}
	}
}

func TestHTTPProber3xxWithoutLocation(t *testing.T) {
	// A 304 or another 3xx without Location is a success that names no
	// redirect.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNotModified)
	}))
	t.Cleanup(srv.Close)
	p := newHTTPProber()
	t.Cleanup(p.close)
	got := probeWithin(p.probe, mustSpec(t, srv.URL+"/"), 10*time.Second)
	checkResult(t, got, Success, "304 Not Modified")
	if strings.Contains(got.Output, "redirect") {
		t.Errorf("output = %q, want no redirect named", got.Output)
	}
}

// TestHTTPSProberHostHeaderNamesTheServer: an https probe of an address
// with a Host header asks for that name in its handshake (SNI) and
// verifies the certificate against it, as curl --connect-to does: a
// certificate for app.example.com, served on 127.0.0.1, verifies. A
// certificate for the URL's own host verifies too, as it does without a
// Host header: the header names the app's virtual host, and need not be
// a name its certificate holds.
func TestHTTPSProberHostHeaderNamesTheServer(t *testing.T) {
	tests := []struct {
		name, certFor, headers string
		insecure               bool
		want                   Outcome
		wantSNI                string
	}{
		{"the Host's name", "app.example.com", "Host: app.example.com", false, Success, "app.example.com"},
		{"the Host's name without its port", "app.example.com", "Host: app.example.com:8443", false, Success, "app.example.com"},
		{"insecure sends the name too", "app.example.com", "Host: app.example.com", true, Success, "app.example.com"},
		{"no Host: the URL's address, which the certificate does not name", "app.example.com", "", false, Failure, ""},
		{"a Host the certificate does not name", "app.example.com", "Host: other.example.com", false, Failure, ""},
		{"a certificate for the URL's address, no Host", "127.0.0.1", "", false, Success, ""},
		{"a certificate for the URL's address, with a Host", "127.0.0.1", "Host: app.example.com", false, Success, "app.example.com"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cert, roots := selfSigned(t, tc.certFor)
			sni := make(chan string, 1)
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				sni <- r.TLS.ServerName
			}))
			srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
			srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
			srv.StartTLS()
			t.Cleanup(srv.Close)
			p := newHTTPProberTrusting(roots)
			t.Cleanup(p.close)

			spec := mustSpec(t, srv.URL+"/healthz")
			hdr, err := ParseHeaders(tc.headers)
			if err != nil {
				t.Fatal(err)
			}
			spec.Header, spec.Insecure = hdr, tc.insecure
			got := probeWithin(p.probe, spec, 10*time.Second)
			checkResult(t, got, tc.want)
			if tc.want == Failure && !strings.Contains(got.Output, "certificate") {
				t.Errorf("output = %q, want a certificate failure", got.Output)
			}
			if got.Outcome != Success {
				return
			}
			if name := <-sni; name != tc.wantSNI {
				t.Errorf("the app's handshake asked for %q, want %q", name, tc.wantSNI)
			}
		})
	}
}

// selfSigned makes a certificate for name alone, a host name or an IP
// address, and a pool that trusts it.
func selfSigned(t *testing.T, name string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip := net.ParseIP(name); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{name}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, roots
}
