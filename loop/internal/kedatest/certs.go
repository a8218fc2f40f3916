package kedatest

import (
	"crypto/x509"
	"net"

	"github.com/outrider-sidecar/outrider/loop/internal/testca"
)

// writeCerts writes, into dir, the files both KEDA servers read from their
// --cert-dir: ca.crt, and tls.crt and tls.key, one certificate for server
// and client authentication that KEDA's CA signed. The operator's gRPC
// server and the adapter's gRPC client authenticate each other with it
// (mutual TLS), and the adapter serves the external metrics API with it to
// the apiserver, which checks it against the APIService's caBundle under
// the name <service>.<namespace>.svc. It returns the CA's PEM.
func writeCerts(dir string, dnsNames []string) (caPEM []byte, err error) {
	ca, err := testca.New("kedatest-ca")
	if err != nil {
		return nil, err
	}
	cert, key, err := ca.Issue("keda", []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		append([]string{"localhost"}, dnsNames...),
		x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, err
	}
	if err := testca.WriteFiles(dir, map[string][]byte{"ca.crt": ca.PEM, "tls.crt": cert, "tls.key": key}); err != nil {
		return nil, err
	}
	return ca.PEM, nil
}
