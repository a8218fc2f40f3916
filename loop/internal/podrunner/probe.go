package podrunner

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// prober sends the kubelet's probes and hook requests to one pod. It
// connects from inside the pod's network, as the kubelet reaches a pod's
// IP directly: a port nobody listens on refuses the connection (the
// forwarder on the host side would accept it first).
type prober struct {
	podIP  string
	dial   func(ctx context.Context, network, addr string) (net.Conn, error)
	client *http.Client
}

func newProber(podIP string, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *prober {
	return &prober{podIP: podIP, dial: dial, client: &http.Client{
		// As the kubelet's prober: no keep-alive, no certificate checks.
		Transport: &http.Transport{
			DialContext:       dial,
			DisableKeepAlives: true,
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // as the kubelet's prober
		},
	}}
}

// probeOnce runs one check of probe against container c, as the kubelet
// does: an httpGet passes on a status from 200 to 399, a tcpSocket on a
// connection.
func (pr *prober) probeOnce(ctx context.Context, p *corev1.Probe, c *corev1.Container) error {
	switch {
	case p.HTTPGet != nil:
		return pr.httpGet(ctx, p.HTTPGet, c)
	case p.TCPSocket != nil:
		port, err := resolvePort(p.TCPSocket.Port, c)
		if err != nil {
			return err
		}
		host := p.TCPSocket.Host
		if host == "" {
			host = pr.podIP
		}
		conn, err := pr.dial(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return err
		}
		return conn.Close()
	case p.Exec != nil:
		return fmt.Errorf("exec probes are not supported by podrunner")
	case p.GRPC != nil:
		return fmt.Errorf("grpc probes are not supported by podrunner")
	}
	return fmt.Errorf("probe has no handler")
}

// httpGet sends the request of a probe or lifecycle hook.
func (pr *prober) httpGet(ctx context.Context, h *corev1.HTTPGetAction, c *corev1.Container) error {
	port, err := resolvePort(h.Port, c)
	if err != nil {
		return err
	}
	host := h.Host
	if host == "" {
		host = pr.podIP
	}
	scheme := "http"
	if h.Scheme == corev1.URISchemeHTTPS {
		scheme = "https"
	}
	u := &url.URL{Scheme: scheme, Host: net.JoinHostPort(host, strconv.Itoa(port))}
	ref, err := url.Parse(h.Path)
	if err != nil {
		return fmt.Errorf("path %q: %w", h.Path, err)
	}
	u = u.ResolveReference(ref)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "kube-probe/podrunner")
	for _, hd := range h.HTTPHeaders {
		if hd.Name == "Host" {
			req.Host = hd.Value
			continue
		}
		req.Header.Add(hd.Name, hd.Value)
	}
	resp, err := pr.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("GET %s: %s: %s", u, resp.Status, body)
	}
	return nil
}

// resolvePort turns a port number or the name of one of c's ports into a
// number.
func resolvePort(port intstr.IntOrString, c *corev1.Container) (int, error) {
	if port.Type == intstr.Int {
		if port.IntVal <= 0 || port.IntVal > 65535 {
			return 0, fmt.Errorf("port %d out of range", port.IntVal)
		}
		return int(port.IntVal), nil
	}
	for _, p := range c.Ports {
		if p.Name == port.StrVal {
			return int(p.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("container %q has no port named %q", c.Name, port.StrVal)
}

// readiness is the kubelet's threshold state machine for one readiness
// probe: not ready until successThreshold passes in a row, ready until
// failureThreshold failures in a row.
type readiness struct {
	success, failure int // thresholds
	passes, fails    int
	ready            bool
}

func newReadiness(p *corev1.Probe) *readiness {
	r := &readiness{success: int(p.SuccessThreshold), failure: int(p.FailureThreshold)}
	if r.success < 1 {
		r.success = 1
	}
	if r.failure < 1 {
		r.failure = 3
	}
	return r
}

// observe records one result and returns the readiness after it.
func (r *readiness) observe(err error) bool {
	if err == nil {
		r.passes, r.fails = r.passes+1, 0
		if r.passes >= r.success {
			r.ready = true
		}
	} else {
		r.passes, r.fails = 0, r.fails+1
		if r.fails >= r.failure {
			r.ready = false
		}
	}
	return r.ready
}

// probeTiming returns a probe's delay, period and timeout with the
// Kubernetes defaults filled in.
func probeTiming(p *corev1.Probe) (delay, period, timeout time.Duration) {
	period, timeout = 10*time.Second, time.Second
	if p.PeriodSeconds > 0 {
		period = time.Duration(p.PeriodSeconds) * time.Second
	}
	if p.TimeoutSeconds > 0 {
		timeout = time.Duration(p.TimeoutSeconds) * time.Second
	}
	return time.Duration(p.InitialDelaySeconds) * time.Second, period, timeout
}
