package probe

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/outrider-sidecar/outrider/internal/version"
)

// grpcProber asks the standard health service, grpc.health.v1.Health/Check,
// over plaintext HTTP/2 with prior knowledge, on a connection of its own,
// as the kubelet's gRPC probe does.
//
// It speaks the protocol's few bytes itself (a length-prefixed message of
// one field each way, the status in the trailers) on net/http's HTTP/2
// client, rather than linking a gRPC library: that library made the agent's
// binary 1.5 MB larger, and nearly all of a binary's pages end up resident
// in every pod that runs it. The tests check it against grpc-go's server.
type grpcProber struct {
	client *http.Client
}

// grpcMaxAnswer bounds the health answer's message: a status is 2 bytes.
const grpcMaxAnswer = 4 << 10

func newGRPCProber() *grpcProber {
	t := appTransport()
	t.Protocols = new(http.Protocols)
	t.Protocols.SetUnencryptedHTTP2(true)
	return &grpcProber{client: &http.Client{
		Transport: t,
		// gRPC has no redirects: grpc-go, and so the kubelet's probe, takes
		// a 3xx for a failure. Following one would report the health of
		// whatever server the app names as the app's own.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

func (p *grpcProber) close() { p.client.CloseIdleConnections() }

// probe calls grpc.health.v1.Health/Check: SERVING is success.
func (p *grpcProber) probe(ctx context.Context, spec Spec) Result {
	start := time.Now()
	if spec.Kind != KindGRPC || spec.Address == "" {
		return result(start, Error, "grpc probe of a %q spec without an address", spec.Kind)
	}
	what := "grpc health check of " + spec.Address
	if spec.Service != "" {
		what = fmt.Sprintf("grpc health check of service %q at %s", spec.Service, spec.Address)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		"http://"+spec.Address+"/grpc.health.v1.Health/Check", bytes.NewReader(healthRequest(spec.Service)))
	if err != nil {
		return result(start, Error, "%s: %v", what, err)
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("TE", "trailers")
	req.Header.Set("User-Agent", version.UserAgent())
	dl, bounded := ctx.Deadline()
	if bounded {
		req.Header.Set("Grpc-Timeout", grpcTimeout(time.Until(dl)))
	}
	resp, err := p.client.Do(req)
	if err != nil {
		if uerr := (*url.Error)(nil); errors.As(err, &uerr) {
			err = uerr.Err
		}
		if ctx.Err() != nil || deadlinePassed(ctx) {
			return failed(ctx, start, what, err)
		}
		return result(start, Failure, "%s: %s: %v", what, grpcCodeName(grpcUnavailable), err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || !isGRPCContentType(ct) {
		// The Content-Type is the app's words: the output only.
		return withDetail(result(start, Failure, "%s: the server answered HTTP %d, not gRPC", what, resp.StatusCode),
			fmt.Sprintf("Content-Type %q", ct))
	}
	// A "trailers-only" answer, an error without a message, carries its
	// status in the head; message then stays nil.
	code, msg := resp.Header.Get("Grpc-Status"), resp.Header.Get("Grpc-Message")
	var message []byte
	if code == "" {
		message, err = readGRPCMessage(resp.Body)
		if err != nil {
			return failed(ctx, start, what+": reading the answer", err)
		}
		code, msg = resp.Trailer.Get("Grpc-Status"), resp.Trailer.Get("Grpc-Message")
	}
	status, err := strconv.Atoi(code)
	if err != nil {
		return withDetail(result(start, Failure, "%s: the answer has no valid grpc-status", what), strconv.Quote(code))
	}
	switch status {
	case grpcOK:
	case grpcUnimplemented:
		return result(start, Failure, "%s: the server does not implement grpc.health.v1.Health", what)
	case grpcNotFound:
		return result(start, Failure, "%s: unknown service", what)
	case grpcDeadlineExceeded:
		// The app gave up at the grpc-timeout the probe sent, a moment
		// before the probe's own deadline: no answer in time, as when
		// the probe gives up first.
		if bounded && time.Until(dl) < (dl.Sub(start))/10 {
			return result(start, Timeout, "%s: no answer within %s", what, timeoutOf(ctx, start))
		}
		return withDetail(result(start, Failure, "%s: %s", what, grpcCodeName(status)), decodeGRPCMessage(msg))
	default:
		return withDetail(result(start, Failure, "%s: %s", what, grpcCodeName(status)), decodeGRPCMessage(msg))
	}
	serving, err := healthStatus(message)
	if err != nil {
		return result(start, Failure, "%s: %v", what, err)
	}
	if serving != healthServing {
		return result(start, Failure, "%s: %s", what, healthStatusName(serving))
	}
	return result(start, Success, "%s: SERVING", what)
}

// The gRPC status codes the probe tells apart.
const (
	grpcOK               = 0
	grpcDeadlineExceeded = 4
	grpcNotFound         = 5
	grpcUnimplemented    = 12
	grpcUnavailable      = 14
)

// grpcCodeNames are the status codes' names as gRPC's libraries print them.
var grpcCodeNames = [...]string{"OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded",
	"NotFound", "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
	"Aborted", "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated"}

func grpcCodeName(code int) string {
	if code >= 0 && code < len(grpcCodeNames) {
		return grpcCodeNames[code]
	}
	return "Code(" + strconv.Itoa(code) + ")"
}

// The serving status of grpc.health.v1.HealthCheckResponse.
const (
	healthUnknown        = 0
	healthServing        = 1
	healthNotServing     = 2
	healthServiceUnknown = 3
)

func healthStatusName(s uint64) string {
	switch s {
	case healthUnknown:
		return "UNKNOWN"
	case healthServing:
		return "SERVING"
	case healthNotServing:
		return "NOT_SERVING"
	case healthServiceUnknown:
		return "SERVICE_UNKNOWN"
	}
	return "status " + strconv.FormatUint(s, 10)
}

func isGRPCContentType(ct string) bool {
	return ct == "application/grpc" || strings.HasPrefix(ct, "application/grpc+") || strings.HasPrefix(ct, "application/grpc;")
}

// healthRequest is a HealthCheckRequest{service} in gRPC's framing: a flag
// byte (not compressed), the length, and the message, whose only field is
// the service name (field 1, length-delimited), left out when empty.
func healthRequest(service string) []byte {
	var msg []byte
	if service != "" {
		msg = append(msg, 1<<3|2)
		msg = binary.AppendUvarint(msg, uint64(len(service)))
		msg = append(msg, service...)
	}
	b := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(b[1:], uint32(len(msg)))
	return append(b, msg...)
}

// readGRPCMessage reads the one message of a unary answer and the end of
// the body, after which the trailers are there.
func readGRPCMessage(body io.Reader) ([]byte, error) {
	var prefix [5]byte
	if _, err := io.ReadFull(body, prefix[:]); err != nil {
		if err == io.EOF {
			// No message: the status in the trailers says why.
			return nil, nil
		}
		return nil, err
	}
	if prefix[0] != 0 {
		return nil, errors.New("the answer is compressed, though the probe asked for none")
	}
	n := binary.BigEndian.Uint32(prefix[1:])
	if n > grpcMaxAnswer {
		return nil, fmt.Errorf("the answer's message is %d bytes, more than the %d a health status takes", n, grpcMaxAnswer)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(body, msg); err != nil {
		return nil, err
	}
	// Read to the end for the trailers; a second message is ignored.
	if _, err := io.Copy(io.Discard, io.LimitReader(body, grpcMaxAnswer)); err != nil {
		return nil, err
	}
	return msg, nil
}

// healthStatus decodes a HealthCheckResponse: field 1, a varint, is the
// status; other fields are skipped, as protobuf readers do. A nil msg is
// an answer without a message.
func healthStatus(msg []byte) (uint64, error) {
	if msg == nil {
		return 0, errors.New("OK without an answer")
	}
	var status uint64
	for len(msg) > 0 {
		key, n := binary.Uvarint(msg)
		if n <= 0 {
			return 0, errMalformedAnswer
		}
		msg = msg[n:]
		field, wire := key>>3, key&7
		switch wire {
		case 0: // varint
			v, n := binary.Uvarint(msg)
			if n <= 0 {
				return 0, errMalformedAnswer
			}
			msg = msg[n:]
			if field == 1 {
				status = v
			}
		case 1: // 64-bit
			if len(msg) < 8 {
				return 0, errMalformedAnswer
			}
			msg = msg[8:]
		case 2: // length-delimited
			l, n := binary.Uvarint(msg)
			if n <= 0 || l > uint64(len(msg)-n) {
				return 0, errMalformedAnswer
			}
			msg = msg[n+int(l):]
		case 5: // 32-bit
			if len(msg) < 4 {
				return 0, errMalformedAnswer
			}
			msg = msg[4:]
		default:
			return 0, errMalformedAnswer
		}
	}
	return status, nil
}

var errMalformedAnswer = errors.New("the answer is not a HealthCheckResponse")

// grpcTimeout writes d as a grpc-timeout value, so that the app gives up
// on the check when the probe does: at most 8 digits and a unit.
func grpcTimeout(d time.Duration) string {
	if d <= 0 {
		return "1n"
	}
	if ms := (d + time.Millisecond - 1) / time.Millisecond; ms < 1e8 {
		return strconv.FormatInt(int64(ms), 10) + "m"
	}
	return strconv.FormatInt(min(int64(d/time.Second), 1e8-1), 10) + "S"
}

// decodeGRPCMessage undoes the percent-encoding of grpc-message.
func decodeGRPCMessage(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	if u, err := url.PathUnescape(s); err == nil {
		return u
	}
	return s
}
