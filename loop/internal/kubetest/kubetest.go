// Package kubetest starts a throw-away Kubernetes control plane for a test:
// etcd, kube-apiserver and kube-controller-manager on free loopback ports,
// from the binaries that `make etcd kube` builds into bin/. There is no
// kubelet and no scheduler; internal/podrunner stands in for both.
package kubetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/outrider-sidecar/outrider/internal/consultest"
	"github.com/outrider-sidecar/outrider/loop/internal/server"
	"github.com/outrider-sidecar/outrider/loop/internal/testca"
)

// controllers are the kube-controller-manager controllers the control plane
// runs: enough for Deployments, their ReplicaSets and Pods, the
// HorizontalPodAutoscaler, and namespaces with their default ServiceAccount
// (pods fail admission without it).
var controllers = []string{
	"deployment-controller",
	"replicaset-controller",
	"horizontal-pod-autoscaler-controller",
	"serviceaccount-controller",
	"garbage-collector-controller",
	"namespace-controller",
}

// ControlPlane is one running control plane.
type ControlPlane struct {
	// URL is the apiserver's base URL, https://127.0.0.1:<port>.
	URL string
	// Token is a bearer token of a system:masters user.
	Token string
	// CAFile is the PEM file of the CA that signed the apiserver's
	// serving certificate.
	CAFile string
	// Kubeconfig is a kubeconfig file for the same user, for programs
	// started by the test (Prometheus, KEDA, kubectl).
	Kubeconfig string
	// FrontProxy holds the files an aggregated API server needs to trust
	// the apiserver's proxied requests.
	FrontProxy FrontProxy

	t     testing.TB
	opts  options
	dir   string
	procs []*server.Process // in start order; stopped in reverse
}

// FrontProxy names the requestheader CA and the client certificate the
// apiserver presents when it proxies to an aggregated API (an APIService).
type FrontProxy struct {
	CAFile, CertFile, KeyFile string
	// AllowedName is the common name of the client certificate.
	AllowedName string
}

// Option changes how the control plane starts.
type Option func(*options)

type options struct {
	hpaSync            time.Duration
	hpaDownscale       time.Duration
	apiserverArgs      []string
	controllerArgs     []string
	readyWithin        time.Duration
	serviceClusterCIDR string
}

// WithHPASyncPeriod sets how often the HorizontalPodAutoscaler controller
// reconciles (default 5s; the controller manager's own default is 15s).
func WithHPASyncPeriod(d time.Duration) Option { return func(o *options) { o.hpaSync = d } }

// WithDownscaleStabilization sets the HorizontalPodAutoscaler's downscale
// stabilisation window (default 5m, as in Kubernetes).
func WithDownscaleStabilization(d time.Duration) Option {
	return func(o *options) { o.hpaDownscale = d }
}

// WithAPIServerArgs adds flags to kube-apiserver; a later flag wins.
func WithAPIServerArgs(args ...string) Option {
	return func(o *options) { o.apiserverArgs = append(o.apiserverArgs, args...) }
}

// WithControllerManagerArgs adds flags to kube-controller-manager; a later
// flag wins.
func WithControllerManagerArgs(args ...string) Option {
	return func(o *options) { o.controllerArgs = append(o.controllerArgs, args...) }
}

// Start runs etcd, kube-apiserver and kube-controller-manager, waits until
// each is ready, and stops them when the test ends: the controller manager
// first, then the apiserver, then etcd. It fails the test (never skips it)
// when a binary is missing.
func Start(t testing.TB, opts ...Option) *ControlPlane {
	t.Helper()
	o := options{
		hpaSync:            5 * time.Second,
		hpaDownscale:       5 * time.Minute,
		readyWithin:        3 * time.Minute,
		serviceClusterCIDR: "10.96.0.0/16",
	}
	for _, opt := range opts {
		opt(&o)
	}
	bins := map[string]string{}
	for _, name := range []string{"etcd", "kube-apiserver", "kube-controller-manager"} {
		bins[name] = Binary(t, name)
	}
	cp := &ControlPlane{t: t, opts: o, dir: t.TempDir()}
	t.Cleanup(func() {
		cp.stop()
		if t.Failed() {
			for _, p := range cp.procs {
				t.Logf("%s log (tail):\n%s", p.Name, server.TailFile(p.LogFile, 3000))
			}
		}
	})
	if err := cp.writeSecrets(); err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	ports := consultest.FreePorts(t, 3)
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	cp.URL = "https://127.0.0.1:" + strconv.Itoa(ports[2])
	if err := cp.writeKubeconfig(); err != nil {
		t.Fatalf("kubetest: %v", err)
	}

	cp.start("etcd", bins["etcd"], cp.etcdArgs(etcdURL, ports[1]))
	cp.waitFor("etcd", func(ctx context.Context) error { return etcdHealthy(ctx, etcdURL) })

	cp.start("kube-apiserver", bins["kube-apiserver"], cp.apiserverArgs(etcdURL, ports[2]))
	client := cp.Client()
	cp.waitFor("kube-apiserver", func(ctx context.Context) error {
		body, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			return fmt.Errorf("GET /readyz: %w: %s", err, body)
		}
		return nil
	})

	cp.start("kube-controller-manager", bins["kube-controller-manager"], cp.controllerManagerArgs())
	// The serviceaccount controller making the default namespace's
	// ServiceAccount shows that the controller manager runs its controllers.
	cp.waitFor("kube-controller-manager", func(ctx context.Context) error {
		_, err := client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err
	})
	return cp
}

// Config is a client configuration for the system:masters user.
func (cp *ControlPlane) Config() *rest.Config {
	ca, err := os.ReadFile(cp.CAFile)
	if err != nil {
		cp.t.Fatalf("kubetest: read CA: %v", err)
	}
	return &rest.Config{
		Host:            cp.URL,
		BearerToken:     cp.Token,
		TLSClientConfig: rest.TLSClientConfig{CAData: ca},
		// The default (5 per second, bursts of 10) throttles a test
		// that creates and watches many objects.
		QPS:   200,
		Burst: 400,
	}
}

// Client is a clientset for the system:masters user.
func (cp *ControlPlane) Client() kubernetes.Interface {
	c, err := kubernetes.NewForConfig(cp.Config())
	if err != nil {
		cp.t.Fatalf("kubetest: client for %s: %v", cp.URL, err)
	}
	return c
}

// Namespace creates a namespace and waits until its default ServiceAccount
// exists, after which pods can be created in it.
func (cp *ControlPlane) Namespace(name string) {
	cp.t.Helper()
	client := cp.Client()
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		cp.t.Fatalf("kubetest: create namespace %q: %v", name, err)
	}
	cp.waitFor("the default ServiceAccount of namespace "+name, func(ctx context.Context) error {
		_, err := client.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
}

func (cp *ControlPlane) start(name, bin string, args []string) {
	cp.t.Helper()
	p, err := server.Start(name, bin, args, nil, filepath.Join(cp.dir, name+".log"))
	if err != nil {
		cp.t.Fatalf("kubetest: %v", err)
	}
	cp.procs = append(cp.procs, p)
}

// waitFor polls check until it succeeds, failing the test when a server
// exits or the time allowed for start-up passes.
func (cp *ControlPlane) waitFor(what string, check func(ctx context.Context) error) {
	cp.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cp.opts.readyWithin)
	defer cancel()
	var last error
	for {
		for _, p := range cp.procs {
			if done, err := p.Exited(); done {
				cp.t.Fatalf("kubetest: %s exited (%v) while waiting for %s; log:\n%s",
					p.Name, err, what, server.TailFile(p.LogFile, 4000))
			}
		}
		attempt, cancelAttempt := context.WithTimeout(ctx, 5*time.Second)
		last = check(attempt)
		cancelAttempt()
		if last == nil {
			return
		}
		select {
		case <-ctx.Done():
			cp.t.Fatalf("kubetest: %s not ready after %s: %v", what, cp.opts.readyWithin, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stop stops the servers in reverse start order. The controller manager
// goes before the apiserver: the other way round, the apiserver waited
// over a minute for its clients on SIGTERM.
func (cp *ControlPlane) stop() {
	for i := len(cp.procs) - 1; i >= 0; i-- {
		if err := cp.procs[i].Stop(10 * time.Second); err != nil {
			cp.t.Logf("kubetest: %v", err)
		}
	}
	cp.procs = nil
}

func (cp *ControlPlane) etcdArgs(clientURL string, peerPort int) []string {
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	return []string{
		"--name", "kubetest",
		"--data-dir", filepath.Join(cp.dir, "etcd"),
		"--listen-client-urls", clientURL,
		"--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL,
		"--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "kubetest=" + peerURL,
		"--log-level", "warn",
		// A throw-away store: losing it on a crash costs nothing, and
		// fsync on a busy disk slows every write.
		"--unsafe-no-fsync",
	}
}

func (cp *ControlPlane) apiserverArgs(etcdURL string, port int) []string {
	f := func(name string) string { return filepath.Join(cp.dir, name) }
	args := []string{
		"--etcd-servers", etcdURL,
		"--bind-address", "127.0.0.1",
		"--advertise-address", "127.0.0.1",
		"--secure-port", strconv.Itoa(port),
		"--cert-dir", f("apiserver-certs"),
		"--tls-cert-file", f("apiserver.crt"),
		"--tls-private-key-file", f("apiserver.key"),
		"--token-auth-file", f("tokens.csv"),
		"--authorization-mode", "RBAC",
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", f("service-account.pub"),
		"--service-account-signing-key-file", f("service-account.key"),
		"--service-cluster-ip-range", cp.opts.serviceClusterCIDR,
		// The default reconciler refuses a loopback advertise address; no
		// test talks to the kubernetes Service anyway.
		"--endpoint-reconciler-type", "none",
		// What an aggregated API (an APIService) needs.
		"--requestheader-client-ca-file", cp.FrontProxy.CAFile,
		"--requestheader-allowed-names", cp.FrontProxy.AllowedName,
		"--requestheader-username-headers", "X-Remote-User",
		"--requestheader-group-headers", "X-Remote-Group",
		"--requestheader-extra-headers-prefix", "X-Remote-Extra-",
		"--proxy-client-cert-file", cp.FrontProxy.CertFile,
		"--proxy-client-key-file", cp.FrontProxy.KeyFile,
		"--profiling=false",
	}
	return append(args, cp.opts.apiserverArgs...)
}

func (cp *ControlPlane) controllerManagerArgs() []string {
	args := []string{
		"--kubeconfig", cp.Kubeconfig,
		"--leader-elect=false",
		"--controllers", strings.Join(controllers, ","),
		"--horizontal-pod-autoscaler-sync-period", cp.opts.hpaSync.String(),
		"--horizontal-pod-autoscaler-downscale-stabilization", cp.opts.hpaDownscale.String(),
		// No HTTPS endpoint: the test checks readiness through what the
		// controllers do, and a fixed port would collide between tests.
		"--secure-port=0",
		"--profiling=false",
	}
	return append(args, cp.opts.controllerArgs...)
}

// writeSecrets generates the CAs, certificates, keys, token file and
// kubeconfig of one control plane into its directory.
func (cp *ControlPlane) writeSecrets() error {
	f := func(name string) string { return filepath.Join(cp.dir, name) }
	ca, err := testca.New("kubetest-ca")
	if err != nil {
		return err
	}
	serverCert, serverKey, err := ca.Issue("kube-apiserver",
		[]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"})
	if err != nil {
		return err
	}
	frontCA, err := testca.New("kubetest-front-proxy-ca")
	if err != nil {
		return err
	}
	const proxyClient = "front-proxy-client"
	proxyCert, proxyKey, err := frontCA.Issue(proxyClient, nil, nil)
	if err != nil {
		return err
	}
	saKey, saPub, err := signingKey()
	if err != nil {
		return err
	}
	token, err := randomToken()
	if err != nil {
		return err
	}
	err = testca.WriteFiles(cp.dir, map[string][]byte{
		"ca.crt":                 ca.PEM,
		"apiserver.crt":          serverCert,
		"apiserver.key":          serverKey,
		"front-proxy-ca.crt":     frontCA.PEM,
		"front-proxy-client.crt": proxyCert,
		"front-proxy-client.key": proxyKey,
		"service-account.key":    saKey,
		"service-account.pub":    saPub,
		// token,user,uid,"groups"
		"tokens.csv": fmt.Appendf(nil, "%s,kubetest-admin,kubetest-admin,\"system:masters\"\n", token),
	})
	if err != nil {
		return err
	}
	cp.Token, cp.CAFile = token, f("ca.crt")
	cp.FrontProxy = FrontProxy{
		CAFile: f("front-proxy-ca.crt"), CertFile: f("front-proxy-client.crt"),
		KeyFile: f("front-proxy-client.key"), AllowedName: proxyClient,
	}
	cp.Kubeconfig = f("kubeconfig")
	return nil
}

// writeKubeconfig writes cp.Kubeconfig once the URL is known.
func (cp *ControlPlane) writeKubeconfig() error {
	ca, err := os.ReadFile(cp.CAFile)
	if err != nil {
		return fmt.Errorf("read CA: %w", err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kubetest"] = &clientcmdapi.Cluster{Server: cp.URL, CertificateAuthorityData: ca}
	cfg.AuthInfos["kubetest-admin"] = &clientcmdapi.AuthInfo{Token: cp.Token}
	cfg.Contexts["kubetest"] = &clientcmdapi.Context{Cluster: "kubetest", AuthInfo: "kubetest-admin"}
	cfg.CurrentContext = "kubetest"
	if err := clientcmd.WriteToFile(*cfg, cp.Kubeconfig); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", cp.Kubeconfig, err)
	}
	return nil
}

func randomToken() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// binaries are the servers this package runs, by name.
var binaries = map[string]server.Binary{
	"etcd":                    {Name: "etcd", EnvVar: "OUTRIDER_ETCD_BIN", Make: "etcd"},
	"kube-apiserver":          {Name: "kube-apiserver", EnvVar: "OUTRIDER_KUBE_APISERVER_BIN", Make: "kube"},
	"kube-controller-manager": {Name: "kube-controller-manager", EnvVar: "OUTRIDER_KUBE_CONTROLLER_MANAGER_BIN", Make: "kube"},
}

// Binary finds a control-plane binary: the environment variable named in
// the error, else bin/<name> in outrider's module root, else <name> on
// PATH. It fails the test when none is.
func Binary(t testing.TB, name string) string {
	t.Helper()
	b, ok := binaries[name]
	if !ok {
		t.Fatalf("kubetest: no binary named %q", name)
	}
	return b.Path(t)
}

// etcdHealthy reports whether etcd answers its /health with health true.
func etcdHealthy(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/health", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("GET %s/health: %w", url, err)
	}
	if !strings.Contains(string(body), `"health":"true"`) {
		return errors.New(string(body))
	}
	return nil
}
