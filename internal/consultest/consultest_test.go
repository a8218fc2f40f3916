package consultest

import (
	"errors"
	"net"
	"testing"

	consul "github.com/hashicorp/consul/api"
)

// TestRegisterAndReadBack proves the throw-away Consul is real: a service
// registered through the agent API is read back from the catalog.
func TestRegisterAndReadBack(t *testing.T) {
	srv := Start(t)
	c := srv.Client()
	reg := &consul.AgentServiceRegistration{
		ID: "web-1", Name: "web", Address: "127.0.0.1", Port: 8080,
		Tags: []string{"v1"}, Meta: map[string]string{"team": "a"},
	}
	if err := c.Agent().ServiceRegister(reg); err != nil {
		t.Fatalf("register: %v", err)
	}
	got, _, err := c.Catalog().Service("web", "", nil)
	if err != nil {
		t.Fatalf("catalog: %v", err)
	}
	if len(got) != 1 {
		t.Fatalf("catalog has %d instances of web, want 1", len(got))
	}
	s := got[0]
	if s.ServiceID != "web-1" || s.ServicePort != 8080 || s.ServiceAddress != "127.0.0.1" ||
		len(s.ServiceTags) != 1 || s.ServiceTags[0] != "v1" || s.ServiceMeta["team"] != "a" {
		t.Errorf("catalog entry = %+v, want web-1 at 127.0.0.1:8080 tags [v1] meta team=a", s)
	}
}

// TestRestartComesBackEmpty checks what the registry tests rely on: a
// restarted dev agent has lost every registration.
func TestRestartComesBackEmpty(t *testing.T) {
	srv := Start(t)
	c := srv.Client()
	if err := c.Agent().ServiceRegister(&consul.AgentServiceRegistration{ID: "x", Name: "x"}); err != nil {
		t.Fatalf("register: %v", err)
	}
	srv.Stop()
	srv.Start()
	svcs, err := c.Agent().Services()
	if err != nil {
		t.Fatalf("services after restart: %v", err)
	}
	if _, ok := svcs["x"]; ok {
		t.Errorf("service x survived a dev-mode restart; want it gone")
	}
}

// TestLaunchReportsATakenPort checks that an agent whose HTTP port another
// process took is told apart from other failures, so that Start tries
// again on other ports.
func TestLaunchReportsATakenPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ports := append([]int{ln.Addr().(*net.TCPAddr).Port}, FreePorts(t, 3)...)
	s := newServer(t, Binary(t), ports, nil)
	err = s.launch()
	if err == nil {
		s.Stop()
		t.Fatal("an agent started on a taken HTTP port")
	}
	if !errors.Is(err, errPortTaken) {
		t.Fatalf("launch on a taken port: %v, want errPortTaken", err)
	}
}
