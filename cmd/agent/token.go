package main

import (
	"log/slog"
	"strings"
	"sync"

	consul "github.com/hashicorp/consul/api"

	"github.com/outrider-sidecar/outrider/internal/regularfile"
	"github.com/outrider-sidecar/outrider/peers"
	"github.com/outrider-sidecar/outrider/register"
)

// tokenFile is the ACL token of CONSUL_HTTP_TOKEN_FILE, read again for
// every request. consul/api reads the file once, when the client is
// built, so a token rotated in the file (Vault Agent, a Kubernetes Secret
// volume, a CSI driver) was not used until a restart, and every request
// failed with 403 "ACL not found" once the old token was deleted.
type tokenFile struct {
	path string
	log  *slog.Logger
	// changed, when set, is called after a new token has been read.
	changed func()

	mu      sync.Mutex
	token   string // the last token read, what a failed read falls back on
	readErr string // the last read error logged, so that each is logged once
	empty   bool   // an empty file was logged, before any token
}

// current returns the token the file holds now. A file that cannot be
// read, or is empty (a writer that truncates and then writes), leaves
// the last token in use.
func (f *tokenFile) current() string {
	data, err := regularfile.Read(f.path)
	token := strings.TrimSpace(string(data))
	f.mu.Lock()
	changed, empty := false, false
	switch {
	case err != nil:
		if err.Error() != f.readErr {
			f.readErr = err.Error()
			f.log.Warn("could not read CONSUL_HTTP_TOKEN_FILE; using the token read before", "err", err)
		}
	case token == "":
		// Before any token, an empty file is no writer's truncation: Consul
		// then answers for its anonymous token, "lacks permission", which
		// sends the reader to the policy of the token that is not used.
		if f.token == "" && !f.empty {
			f.empty, empty = true, true
		}
	default:
		changed = f.token != "" && token != f.token
		f.token, f.readErr = token, ""
	}
	token = f.token
	f.mu.Unlock()
	if empty {
		f.log.Warn("CONSUL_HTTP_TOKEN_FILE is empty; requests to consul go without its token (with CONSUL_HTTP_TOKEN if set, else as consul's anonymous token) until it holds one",
			"path", f.path)
	}
	if changed {
		f.log.Info("using the new ACL token of CONSUL_HTTP_TOKEN_FILE; registering again with it", "path", f.path)
		if f.changed != nil {
			f.changed()
		}
	}
	return token
}

// query returns a copy of q with the current token.
func (f *tokenFile) query(q *consul.QueryOptions) *consul.QueryOptions {
	var c consul.QueryOptions
	if q != nil {
		c = *q
	}
	c.Token = f.current()
	return &c
}

// tokenAgent is the Consul agent API with the token of a tokenFile on
// every request.
type tokenAgent struct {
	*consul.Agent
	tok *tokenFile
}

var _ register.Agent = tokenAgent{}

func (a tokenAgent) q(q *consul.QueryOptions) *consul.QueryOptions { return a.tok.query(q) }

func (a tokenAgent) ServiceRegisterOpts(reg *consul.AgentServiceRegistration, opts consul.ServiceRegisterOpts) error {
	opts.Token = a.tok.current()
	return a.Agent.ServiceRegisterOpts(reg, opts)
}

func (a tokenAgent) UpdateTTLOpts(checkID, output, status string, q *consul.QueryOptions) error {
	return a.Agent.UpdateTTLOpts(checkID, output, status, a.q(q))
}

func (a tokenAgent) ServiceDeregisterOpts(serviceID string, q *consul.QueryOptions) error {
	return a.Agent.ServiceDeregisterOpts(serviceID, a.q(q))
}

func (a tokenAgent) EnableServiceMaintenanceOpts(serviceID, reason string, q *consul.QueryOptions) error {
	return a.Agent.EnableServiceMaintenanceOpts(serviceID, reason, a.q(q))
}

func (a tokenAgent) DisableServiceMaintenanceOpts(serviceID string, q *consul.QueryOptions) error {
	return a.Agent.DisableServiceMaintenanceOpts(serviceID, a.q(q))
}

func (a tokenAgent) AgentHealthServiceByIDOpts(serviceID string, q *consul.QueryOptions) (string, *consul.AgentServiceChecksInfo, error) {
	return a.Agent.AgentHealthServiceByIDOpts(serviceID, a.q(q))
}

// tokenHealth is the Consul health API with the token of a tokenFile on
// every request.
type tokenHealth struct {
	*consul.Health
	tok *tokenFile
}

var _ peers.Health = tokenHealth{}

func (h tokenHealth) Service(service, tag string, passingOnly bool, q *consul.QueryOptions) ([]*consul.ServiceEntry, *consul.QueryMeta, error) {
	return h.Health.Service(service, tag, passingOnly, h.tok.query(q))
}
