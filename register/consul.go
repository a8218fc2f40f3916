package register

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"

	consul "github.com/hashicorp/consul/api"
)

// Agent is what a Registrar needs of the local Consul agent's API.
// *consul.Agent (client.Agent()) has it; tests pass a fake.
type Agent interface {
	ServiceRegisterOpts(reg *consul.AgentServiceRegistration, opts consul.ServiceRegisterOpts) error
	UpdateTTLOpts(checkID, output, status string, q *consul.QueryOptions) error
	ServiceDeregisterOpts(serviceID string, q *consul.QueryOptions) error
	EnableServiceMaintenanceOpts(serviceID, reason string, q *consul.QueryOptions) error
	DisableServiceMaintenanceOpts(serviceID string, q *consul.QueryOptions) error
	AgentHealthServiceByIDOpts(serviceID string, q *consul.QueryOptions) (string, *consul.AgentServiceChecksInfo, error)
}

// isNotFound reports whether Consul answered that the service or check is unknown.
func isNotFound(err error) bool {
	var se consul.StatusError
	return errors.As(err, &se) && se.Code == 404
}

// notTaken reports whether err shows that Consul did not take a request:
// outrider could not connect, Consul's certificate did not verify, or
// Consul refused it with a 4xx. Any other
// failure (a timeout, a cut connection, a 5xx) may have come after Consul
// took it.
func notTaken(err error) bool {
	var se consul.StatusError
	if errors.As(err, &se) {
		return se.Code >= 400 && se.Code < 500
	}
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial" || certNotVerified(err)
}

// certNotVerified reports whether err is Consul's TLS certificate failing
// verification: the handshake ended before any request was sent.
func certNotVerified(err error) bool {
	return errors.As(err, new(*tls.CertificateVerificationError))
}

// certHint says what to set for a certificate that did not verify: the
// server name when the certificate is not valid for the one outrider
// asked for, the CA when it was signed by one outrider does not trust.
func certHint(err error) string {
	switch {
	case errors.As(err, new(x509.HostnameError)):
		return "set CONSUL_TLS_SERVER_NAME to a name the certificate is valid for"
	case errors.As(err, new(x509.UnknownAuthorityError)):
		return "set CONSUL_CACERT or CONSUL_CAPATH to the CA that signed it"
	}
	return "fix the certificate Consul serves, or set CONSUL_CACERT or CONSUL_CAPATH to the CA that signed it"
}
