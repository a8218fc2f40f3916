package deploy_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outrider-sidecar/outrider/internal/consultest"
	"github.com/outrider-sidecar/outrider/internal/testbin"
)

// The base's sidecar, run for real: outrider with the environment the
// kubelet would give it (listeners and Consul moved to free loopback
// ports), the sample app, a real Consul; then the app container's preStop
// hook called exactly as the manifest says (GET, path, header) drains the
// instance within the pod's grace period, and the SIGTERM that follows
// ends outrider at once.
func TestPreStopHookDrainsTheRealAgent(t *testing.T) {
	a := build(t, "base").app(t)
	srv := consultest.Start(t)
	echoAddr := testbin.FreeAddr(t)
	testbin.Start(t, testbin.Echo(t), nil, "-listen", echoAddr)
	testbin.WaitHTTP(t, "http://"+echoAddr+"/healthz", http.StatusOK, 20*time.Second)

	moved := map[string]string{}
	var env []string
	for k, v := range a.env {
		switch k {
		case "OUTRIDER_PROXY_LISTEN", "OUTRIDER_METRICS_LISTEN", "OUTRIDER_ADMIN_LISTEN":
			v = testbin.FreeAddr(t)
			moved[k] = v
		case "OUTRIDER_APP_ADDR":
			v = echoAddr
		case "OUTRIDER_PROBE":
			v = strings.Replace(v, a.cfg.App.Addr, echoAddr, 1)
		}
		env = append(env, k+"="+v)
	}
	// The test's Consul, in place of the node's agent at HOST_IP:8500.
	env = append(env, "CONSUL_HTTP_ADDR="+srv.HTTPAddr)
	o := testbin.Start(t, testbin.Outrider(t), env)
	metrics := "http://" + moved["OUTRIDER_METRICS_LISTEN"]
	c := srv.Client()
	waitFor(t, 20*time.Second, a.cfg.Service.ID+" passing in consul", func() bool {
		entries, _, err := c.Health().Service(a.cfg.Service.Name, "", true, nil)
		return err == nil && len(entries) == 1 && entries[0].Service.ID == a.cfg.Service.ID
	})
	testbin.WaitHTTP(t, metrics+"/ready", http.StatusOK, 10*time.Second)

	hook := a.app.Lifecycle.PreStop.HTTPGet
	url := "http://" + moved["OUTRIDER_ADMIN_LISTEN"] + hook.Path
	if resp, err := http.Get(url); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET %s without the token: %v %v, want 401", url, resp, err)
	}
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hook.HTTPHeaders {
		req.Header.Set(h.Name, h.Value)
	}
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("the preStop hook's GET %s: %v", url, err)
	}
	took := time.Since(start)
	var rep struct {
		Trigger      string `json:"trigger"`
		Deregistered bool   `json:"deregistered"`
		Error        string `json:"error"`
	}
	err = json.NewDecoder(resp.Body).Decode(&rep)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || !rep.Deregistered || rep.Error != "" {
		t.Fatalf("preStop hook: %s %+v (%v), want 200 and deregistered", resp.Status, rep, err)
	}
	grace := time.Duration(*a.deploy.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
	if took < a.cfg.Drain.Delay || took > grace {
		t.Errorf("the hook answered after %s, want between the drain delay %s and the grace period %s", took, a.cfg.Drain.Delay, grace)
	}
	t.Logf("preStop hook: drained in %s (trigger %s)", took.Round(time.Millisecond), rep.Trigger)
	if svcs, _, err := c.Catalog().Service(a.cfg.Service.Name, "", nil); err != nil || len(svcs) != 0 {
		t.Errorf("after the preStop hook consul still has %d instances (%v)", len(svcs), err)
	}
	if code, _ := httpStatus(metrics + "/ready"); code != http.StatusServiceUnavailable {
		t.Errorf("/ready = %d after the drain, want 503", code)
	}

	// The kubelet stops the app, then sends the native sidecar SIGTERM.
	o.Signal(syscall.SIGTERM)
	start = time.Now()
	if code := o.Wait(10 * time.Second); code != 0 {
		t.Errorf("outrider exited %d on SIGTERM after the drain, want 0", code)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("outrider took %s to exit on SIGTERM after the drain; the drain should not run twice", d)
	}
}

func httpStatus(url string) (int, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
