package probe

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/outrider-sidecar/outrider/internal/version"
)

// httpBodyLimit is how much of a response body a probe reads; the rest is
// left unread.
const httpBodyLimit = 10 << 10

// httpMaxRedirects is how many same-host redirects a probe follows, as
// the kubelet does.
const httpMaxRedirects = 10

// httpProber keeps one client per TLS mode, and one for the server name
// of the last probe that set a Host header.
type httpProber struct {
	verify, insecure *http.Client
	// roots verifies the app's certificate; nil is the system's pool.
	roots *x509.CertPool

	mu        sync.Mutex
	named     *http.Client
	namedMode tlsMode
}

// tlsMode is how a client handshakes: the name it asks for and verifies
// ("" for the URL's host), the URL's host, which it verifies too when it
// asks for a name, and whether it verifies at all.
type tlsMode struct {
	serverName, urlHost string
	insecure            bool
}

func newHTTPProber() *httpProber { return newHTTPProberTrusting(nil) }

// newHTTPProberTrusting is newHTTPProber verifying certificates against
// roots instead of the system's pool.
func newHTTPProberTrusting(roots *x509.CertPool) *httpProber {
	p := &httpProber{roots: roots}
	p.verify, p.insecure = p.newClient(tlsMode{}), p.newClient(tlsMode{insecure: true})
	return p
}

func (p *httpProber) newClient(m tlsMode) *http.Client {
	t := appTransport()
	t.TLSClientConfig = &tls.Config{ServerName: m.serverName, InsecureSkipVerify: m.insecure, RootCAs: p.roots}
	if m.serverName != "" && !m.insecure {
		// Verified by verifyFor instead, against either name.
		t.TLSClientConfig.InsecureSkipVerify = true
		t.TLSClientConfig.VerifyConnection = func(cs tls.ConnectionState) error {
			return p.verifyFor(cs.PeerCertificates, m.serverName, m.urlHost)
		}
	}
	return &http.Client{Transport: t, CheckRedirect: sameHostRedirects}
}

// verifyFor verifies the server's chain against the prober's roots and its
// certificate against the first name, or else one of the others, as the
// handshake would against one; the error is the first name's.
func (p *httpProber) verifyFor(certs []*x509.Certificate, names ...string) error {
	if len(certs) == 0 {
		return errors.New("tls: the server sent no certificate")
	}
	intermediates := x509.NewCertPool()
	for _, c := range certs[1:] {
		intermediates.AddCert(c)
	}
	var first error
	for _, name := range names {
		_, err := certs[0].Verify(x509.VerifyOptions{Roots: p.roots, Intermediates: intermediates, DNSName: name})
		if err == nil {
			return nil
		}
		first = cmp.Or(first, err)
	}
	return &tls.CertificateVerificationError{UnverifiedCertificates: certs, Err: first}
}

// client returns the client for spec. A Host header names the server the
// probe asks for: the TLS handshake sends that name (SNI) and verifies the
// certificate against it, as a browser asking for the name would, and not
// only against the URL's host, often an IP address the certificate does
// not name. A certificate for the URL's host verifies as well, as it does
// without the header: the Host may name a virtual host of the app's that
// its certificate does not hold. A non-ASCII name is left to the URL's
// host: the certificate holds it in punycode, which only the client's own
// conversion makes.
func (p *httpProber) client(spec Spec) *http.Client {
	m := tlsMode{serverName: tlsServerName(spec.Header.Get("Host")), insecure: spec.Insecure}
	if m.serverName != "" && spec.URL != nil {
		m.urlHost = spec.URL.Hostname()
	}
	switch {
	case m.serverName == "" && m.insecure:
		return p.insecure
	case m.serverName == "":
		return p.verify
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.named == nil || p.namedMode != m {
		if p.named != nil {
			p.named.CloseIdleConnections()
		}
		p.named, p.namedMode = p.newClient(m), m
	}
	return p.named
}

// tlsServerName is the host name of a Host header's host or host:port,
// without brackets or port; "" when there is none, or it is not ASCII.
func tlsServerName(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	for _, c := range []byte(host) {
		if c >= 0x80 {
			return ""
		}
	}
	return host
}

// appTransport is the base of the http and grpc probes' transports. Each
// probe opens a connection of its own and closes it, as the kubelet's do:
// a connection kept from the last probe would go on passing while the app
// accepts no new one (its listener closed, its accept loop dead, its
// backlog full), and the app would stay in Consul with no client able to
// reach it.
func appTransport() *http.Transport {
	return &http.Transport{
		// The app is beside outrider: a proxy from the environment must
		// not sit between them.
		Proxy:              nil,
		DialContext:        (&net.Dialer{}).DialContext,
		DisableKeepAlives:  true,
		DisableCompression: true,
	}
}

// sameHostRedirects follows redirects to the probed host only. A redirect
// elsewhere is not followed, and its 3xx answer is the probe's result, as
// the kubelet does.
func sameHostRedirects(req *http.Request, via []*http.Request) error {
	if req.URL.Hostname() != via[0].URL.Hostname() {
		return http.ErrUseLastResponse
	}
	if len(via) >= httpMaxRedirects {
		return errTooManyRedirects
	}
	return nil
}

// errTooManyRedirects ends a probe that met more than httpMaxRedirects
// redirects.
var errTooManyRedirects = fmt.Errorf("stopped after %d redirects", httpMaxRedirects)

// quotesTheApp reports whether err, from client.Do, may quote what the app
// sent: Go's client quotes a malformed status line or header line, e.g.
// `malformed HTTP status code "…"`. The errors of the connection, of TLS
// and the redirect limit quote nothing of the app's.
func quotesTheApp(err error) bool {
	var (
		opErr     *net.OpError
		recordErr tls.RecordHeaderError
		alertErr  tls.AlertError
		verifyErr *tls.CertificateVerificationError
	)
	switch {
	case errors.As(err, &opErr), errors.As(err, &recordErr), errors.As(err, &alertErr), errors.As(err, &verifyErr),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, errTooManyRedirects):
		return false
	}
	return true
}

func (p *httpProber) close() {
	p.verify.CloseIdleConnections()
	p.insecure.CloseIdleConnections()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.named != nil {
		p.named.CloseIdleConnections()
	}
}

// probe GETs spec.URL: 200–399 is success, anything else a failure. The
// probe's credentials are masked in the output, should the app quote them
// (an error body that repeats the Authorization it refused): the output
// goes to the Consul check, which whoever reads the catalog sees.
func (p *httpProber) probe(ctx context.Context, spec Spec) Result {
	r := p.get(ctx, spec)
	for _, s := range probeSecrets(spec) {
		r.Output = strings.ReplaceAll(r.Output, s, "********")
	}
	return r
}

// minSecret is the length under which a value is taken for no secret:
// masking "yes" or "1" wherever the app's answer holds it would garble
// the output, and a credential is longer.
const minSecret = 8

// probeSecrets lists what of spec a probe's output must not show: each
// header value but those that describe the request (Host, Accept,
// User-Agent), and the credentials after an auth scheme
// ("Bearer t0k3n…"), the URL's password and the Basic credentials the
// client makes of the URL's user information, each of minSecret bytes or
// more.
func probeSecrets(spec Spec) []string {
	var secrets []string
	add := func(s string) {
		if len(s) >= minSecret {
			secrets = append(secrets, s)
		}
	}
	for name, values := range spec.Header {
		switch name {
		case "Host", "Accept", "User-Agent":
			continue
		}
		for _, v := range values {
			add(v)
			if _, creds, ok := strings.Cut(v, " "); ok {
				add(strings.TrimSpace(creds))
			}
		}
	}
	if u := spec.URL; u != nil && u.User != nil {
		pw, _ := u.User.Password()
		add(pw)
		add(base64.StdEncoding.EncodeToString([]byte(u.User.Username() + ":" + pw)))
	}
	// The whole value before its credentials alone.
	slices.SortFunc(secrets, func(a, b string) int { return len(b) - len(a) })
	return secrets
}

// get GETs spec.URL once.
func (p *httpProber) get(ctx context.Context, spec Spec) Result {
	start := time.Now()
	if (spec.Kind != KindHTTP && spec.Kind != KindHTTPS) || spec.URL == nil {
		return result(start, Error, "http probe of a %q spec without a URL", spec.Kind)
	}
	what := "GET " + spec.URL.Redacted()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, spec.URL.String(), nil)
	if err != nil {
		return result(start, Error, "%s: %v", what, err)
	}
	for name, values := range spec.Header {
		for _, v := range values {
			req.Header.Add(name, v)
		}
	}
	if host := spec.Header.Get("Host"); host != "" {
		req.Host = host
	}
	// As the kubelet: defaults the app's own headers can override, and
	// leave out when set empty (Go's client sends no empty User-Agent).
	if _, ok := req.Header["User-Agent"]; !ok {
		req.Header.Set("User-Agent", version.UserAgent())
	}
	if _, ok := req.Header["Accept"]; !ok {
		req.Header.Set("Accept", "*/*")
	} else if req.Header.Get("Accept") == "" {
		req.Header.Del("Accept")
	}
	resp, err := p.client(spec).Do(req)
	if err != nil {
		// url.Error repeats the method and URL that what already names.
		if uerr := (*url.Error)(nil); errors.As(err, &uerr) {
			err = uerr.Err
		}
		r := failed(ctx, start, what, err)
		if verifyErr := (*tls.CertificateVerificationError)(nil); r.Outcome == Failure && errors.As(err, &verifyErr) {
			// Also met on an http probe the app redirects to https.
			r = withDetail(r, "set OUTRIDER_PROBE_INSECURE=true to probe without verifying the certificate, as the kubelet does")
		}
		if r.Outcome == Failure && quotesTheApp(err) {
			// The summary is for the public /ready: the bytes the app
			// sent stay in the output.
			r.Summary = what + ": the answer is malformed"
		}
		return r
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, httpBodyLimit))
	resp.Body.Close()
	if err != nil {
		return failed(ctx, start, what+": reading the body", err)
	}
	switch code := resp.StatusCode; {
	case code >= 300 && code < 400 && resp.Header.Get("Location") == "":
		return result(start, Success, "%s: %s", what, resp.Status)
	case code >= 300 && code < 400:
		return result(start, Success, "%s: %s (redirect to %s not followed)", what, resp.Status, resp.Header.Get("Location"))
	case code >= 200 && code < 300:
		return result(start, Success, "%s: %s", what, resp.Status)
	default:
		// The summary has the code and its standard text, not the app's
		// reason phrase or body.
		r := result(start, Failure, "%s: %s", what, resp.Status)
		r.Summary = strings.TrimSuffix(fmt.Sprintf("%s: %d %s", what, code, http.StatusText(code)), " ")
		return withDetail(r, snippet(body, 200))
	}
}
