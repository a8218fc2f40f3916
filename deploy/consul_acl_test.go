package deploy_test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"

	"github.com/outrider-sidecar/outrider/internal/consultest"
	"github.com/outrider-sidecar/outrider/internal/testbin"
)

// TestMain gives testbin its build directory: the ACL test runs outrider
// and the sample app as processes.
func TestMain(m *testing.M) { testbin.Main(m) }

// The ACL policy in deploy/k8s/consul is enough for everything outrider
// does with Consul (register, heartbeat, deregister, /v1/peers) for its
// service, and no more: it cannot register another service. Against a real
// Consul with default-deny ACLs.
func TestConsulACLPolicy(t *testing.T) {
	rules, err := os.ReadFile(filepath.Join("k8s", "consul", "acl-policy.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	srv := consultest.Start(t, consultest.WithACL("root-token-for-tests"))
	admin := srv.Client()
	pol, _, err := admin.ACL().PolicyCreate(&consul.ACLPolicy{Name: "outrider-echo", Rules: string(rules)}, nil)
	if err != nil {
		t.Fatalf("consul acl policy create -rules @acl-policy.hcl: %v", err)
	}
	tok, _, err := admin.ACL().TokenCreate(&consul.ACLToken{Description: "outrider for echo", Policies: []*consul.ACLTokenPolicyLink{{ID: pol.ID}}}, nil)
	if err != nil {
		t.Fatalf("create token: %v", err)
	}

	echoAddr := testbin.FreeAddr(t)
	testbin.Start(t, testbin.Echo(t), nil, "-listen", echoAddr)
	testbin.WaitHTTP(t, "http://"+echoAddr+"/healthz", http.StatusOK, 20*time.Second)
	metrics, adminAddr, proxy := testbin.FreeAddr(t), testbin.FreeAddr(t), testbin.FreeAddr(t)
	o := testbin.Start(t, testbin.Outrider(t), []string{
		"OUTRIDER_SERVICE_NAME=echo", "OUTRIDER_SERVICE_ID=echo-acl", "OUTRIDER_SERVICE_ADDRESS=127.0.0.1",
		"OUTRIDER_APP_ADDR=" + echoAddr, "OUTRIDER_PROBE=http://" + echoAddr + "/healthz", "OUTRIDER_PROBE_PERIOD=200ms",
		"OUTRIDER_PROXY_LISTEN=" + proxy, "OUTRIDER_METRICS_LISTEN=" + metrics, "OUTRIDER_ADMIN_LISTEN=" + adminAddr,
		"OUTRIDER_DRAIN_DELAY=0s", "OUTRIDER_DRAIN_TIMEOUT=5s",
		"CONSUL_HTTP_ADDR=" + srv.HTTPAddr, "CONSUL_HTTP_TOKEN=" + tok.SecretID,
	})

	// Registered and passing: register and TTL updates were allowed.
	waitFor(t, 20*time.Second, "echo-acl passing in consul", func() bool {
		entries, _, err := admin.Health().Service("echo", "", true, nil)
		return err == nil && len(entries) == 1 && entries[0].Service.ID == "echo-acl"
	})
	testbin.WaitHTTP(t, "http://"+metrics+"/ready", http.StatusOK, 10*time.Second)

	// /v1/peers reads services' health, its own and others': service and
	// node read.
	if err := admin.Agent().ServiceRegister(&consul.AgentServiceRegistration{Name: "billing", ID: "billing-1", Port: 1}); err != nil {
		t.Fatal(err)
	}
	for service, id := range map[string]string{"echo": "echo-acl", "billing": "billing-1"} {
		waitFor(t, 10*time.Second, "/v1/peers/"+service+" listing "+id, func() bool {
			resp, err := http.Get("http://" + adminAddr + "/v1/peers/" + service)
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			var peers []struct{ ID string }
			return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&peers) == nil && len(peers) == 1 && peers[0].ID == id
		})
	}

	// No more than that: the token cannot register another service.
	scoped, err := consul.NewClient(&consul.Config{Address: srv.HTTPAddr, Token: tok.SecretID})
	if err != nil {
		t.Fatal(err)
	}
	err = scoped.Agent().ServiceRegister(&consul.AgentServiceRegistration{Name: "billing", ID: "billing-2", Port: 1})
	if err == nil || !strings.Contains(err.Error(), "Permission denied") {
		t.Errorf("registering billing with outrider's token: %v, want Permission denied", err)
	}

	// Deregistration on an orderly stop is allowed too.
	o.Signal(syscall.SIGTERM)
	if code := o.Wait(30 * time.Second); code != 0 {
		t.Errorf("outrider exited %d after SIGTERM, want 0", code)
	}
	if svcs, _, err := admin.Catalog().Service("echo", "", nil); err != nil || len(svcs) != 0 {
		t.Errorf("after outrider stopped consul still has %d instances of echo (%v)", len(svcs), err)
	}
}

// waitFor polls cond until it holds or limit passes.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(limit)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline:
			t.Fatalf("no %s within %s", what, limit)
		case <-tick.C:
		}
	}
}
