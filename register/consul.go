package register

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"strings"

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
// outrider could not connect, the TLS handshake failed (Consul's
// certificate did not verify, Consul refused outrider's, or one side does
// not speak TLS), or Consul refused it with a 4xx. Any other
// failure (a timeout, a cut connection, a 5xx) may have come after Consul
// took it.
func notTaken(err error) bool {
	var se consul.StatusError
	if errors.As(err, &se) {
		return se.Code >= 400 && se.Code < 500
	}
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial" || certNotVerified(err) || tlsRefused(err) ||
		errors.Is(err, http.ErrSchemeMismatch)
}

// deniedHint says what to do about a 401 or 403: Consul answers "ACL not
// found" for a token it does not know (deleted, expired, or lost when a
// Consul without persisted ACL data restarted), which no policy mends,
// and "Permission denied: token … lacks permission …" for a token whose
// policy falls short.
func deniedHint(err error) string {
	var se consul.StatusError
	if errors.As(err, &se) && unknownToken(se) {
		return "consul does not know the token (deleted, expired, or lost by consul): " +
			"set CONSUL_HTTP_TOKEN or CONSUL_HTTP_TOKEN_FILE to a token consul has, with service:write on the service"
	}
	return "set CONSUL_HTTP_TOKEN or CONSUL_HTTP_TOKEN_FILE to a token with service:write on the service"
}

// LeftBehind says what becomes of the instance once outrider is gone,
// its deregistration having failed with err, and what to do about it.
// Consul reaps it after deregister_critical_after, unless Consul refused
// outrider's token: its agent syncs the instance to the catalog with that
// same token, so neither the critical checks nor the reaping reach the
// catalog, where the instance stays passing.
func LeftBehind(err error) string {
	const left = "consul's agent syncs the instance to the catalog with the token consul refused, so it cannot take it out either: " +
		"the instance stays in the catalog, passing, and is never reaped; "
	const byHand = "deregister it through the catalog (PUT /v1/catalog/deregister with the node of consul's agent " +
		"and the service ID, with a token with node:write and service:write)"
	switch classify(err) {
	case linkUnknownToken:
		return left + byHand
	case linkDenied:
		return left + "give the token service:write on the service again (the agent then takes the instance out at its next sync), or " + byHand
	}
	return "consul reaps the instance after deregister_critical_after"
}

// unknownToken reports whether Consul answered that it does not know the
// token.
func unknownToken(se consul.StatusError) bool { return strings.Contains(se.Body, "ACL not found") }

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

// tlsRefused reports whether Consul ended the TLS handshake with an alert,
// as it does when it requires a client certificate (verify_incoming) and
// outrider sent none, or one it does not trust. A server sends alerts
// while it shakes hands, before it reads any request.
func tlsRefused(err error) bool { return tlsAlert(err) != "" }

// tlsAlert is the alert Consul refused the handshake with ("tls:
// certificate required"), "" when it did not.
func tlsAlert(err error) string {
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "remote error" || oe.Err == nil {
		return ""
	}
	return oe.Err.Error()
}

// tlsRefusedHint says what to set for a handshake Consul refused, from its
// alert: "certificate required" when outrider sent no client certificate,
// "unknown certificate authority", "bad certificate" and the like when Consul does not accept the one it
// sent. Over TLS 1.2 a missing certificate is a "handshake failure", which
// may also be a TLS version or cipher suite that the two do not share.
func tlsRefusedHint(err error) string {
	switch alert := tlsAlert(err); {
	case alert == "tls: certificate required":
		return "consul requires a client certificate (verify_incoming): set CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY"
	case strings.Contains(alert, "certificate"):
		return "consul did not accept outrider's client certificate: set CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY to a certificate and key signed by a CA consul trusts (its ca_file)"
	}
	return "if consul requires a client certificate (verify_incoming), set CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY; " +
		"else consul allows no TLS version or cipher suite that outrider offers"
}

// Scheme mismatches: plain HTTP sent to a Consul that serves HTTPS, which
// answers it with a 400 naming the mistake (Go's HTTP server does), or a
// TLS handshake sent to a Consul that serves plain HTTP.
const (
	schemeHTTPToHTTPS = "http_to_https"
	schemeHTTPSToHTTP = "https_to_http"
)

// httpsServerBody is what Go's HTTP server, Consul's, answers plain HTTP
// sent to its TLS listener.
const httpsServerBody = "Client sent an HTTP request to an HTTPS server"

// schemeMismatch returns which scheme mismatch err shows, "" for none.
func schemeMismatch(err error) string {
	var se consul.StatusError
	switch {
	case errors.As(err, &se) && se.Code == http.StatusBadRequest && strings.Contains(se.Body, httpsServerBody):
		return schemeHTTPToHTTPS
	case errors.Is(err, http.ErrSchemeMismatch):
		return schemeHTTPSToHTTP
	}
	return ""
}

// schemeHint says what to set for a scheme mismatch. consul/api takes
// https when either CONSUL_HTTP_ADDR says https:// or CONSUL_HTTP_SSL is
// true, so plain HTTP needs both.
func schemeHint(err error) string {
	if schemeMismatch(err) == schemeHTTPToHTTPS {
		return "consul serves HTTPS and outrider sent plain HTTP: set CONSUL_HTTP_ADDR to https://… or CONSUL_HTTP_SSL=true"
	}
	return "consul serves plain HTTP and outrider asked for TLS: set CONSUL_HTTP_ADDR to http://… and CONSUL_HTTP_SSL=false (or unset it)"
}
