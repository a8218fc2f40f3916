package register

import (
	"errors"
	"net/http"
	"sync"
	"time"

	consul "github.com/hashicorp/consul/api"
)

// linkState is the state of outrider's conversation with Consul, logged
// once per change.
type linkState string

const (
	linkStarting    linkState = "starting"
	linkOK          linkState = "ok"
	linkUnreachable linkState = "unreachable"
	linkDenied      linkState = "denied"
	// linkUnknownToken: Consul does not know the ACL token ("ACL not
	// found": deleted, expired, or lost by a restarted Consul), which no
	// policy mends, unlike denied.
	linkUnknownToken linkState = "unknown_token"
	linkRejected     linkState = "rejected"
	// linkUntrusted: Consul's TLS certificate did not verify, so no
	// request reached it.
	linkUntrusted linkState = "untrusted"
	// linkTLSRefused: Consul refused the TLS handshake, most often for
	// outrider's client certificate or its lack of one.
	linkTLSRefused linkState = "tls_refused"
	// linkWrongScheme: plain HTTP to a Consul that serves HTTPS, or TLS to
	// one that serves plain HTTP.
	linkWrongScheme linkState = "wrong_scheme"
)

// link follows whether Consul answers: the state, the failures in a row
// and when the outage began, and the delay before the next attempt.
type link struct {
	base time.Duration
	rand func() float64

	mu        sync.Mutex
	state     linkState
	failures  int
	downSince time.Time
	lastErr   string
	lastErrAt time.Time
}

func newLink(base time.Duration, rand func() float64) *link {
	return &link{base: base, rand: rand, state: linkStarting}
}

// linkChange is what a failure or a success did to the link.
type linkChange struct {
	prev, state linkState
	failures    int
	downSince   time.Time
}

// fail records a failed request at now and returns the change and the
// backoff before the next attempt, at most max.
func (l *link) fail(err error, now time.Time, max time.Duration) (linkChange, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := linkChange{prev: l.state, state: classify(err)}
	l.failures++
	if c.prev == linkOK || c.prev == linkStarting {
		l.downSince = now
	}
	l.state = c.state
	l.lastErr, l.lastErrAt = err.Error(), now
	c.failures, c.downSince = l.failures, l.downSince
	return c, backoff(l.failures, l.base, max, l.rand())
}

// note records err at now as the last error, for /status, without
// counting it against the link: Consul answered, and err is outrider's
// own reason not to go ahead.
func (l *link) note(err error, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lastErr, l.lastErrAt = err.Error(), now
}

// succeed records an answer; the change carries the failures before it.
func (l *link) succeed() linkChange {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := linkChange{prev: l.state, state: linkOK, failures: l.failures, downSince: l.downSince}
	l.state, l.failures = linkOK, 0
	return c
}

// recovered reports whether c ends an outage.
func (c linkChange) recovered() bool { return c.prev != linkOK && c.prev != linkStarting }

func (l *link) status(s *Status) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s.Consul = string(l.state)
	s.ConsecutiveFailures = l.failures
	s.LastError, s.LastErrorAt = l.lastErr, l.lastErrAt
}

// backoff is the delay before retry number attempt (from 1): exponential
// from base, capped at max, with "equal jitter" (half fixed, half random)
// so that many sidecars do not retry in step. jitter is in [0, 1).
func backoff(attempt int, base, max time.Duration, jitter float64) time.Duration {
	d := max
	if attempt < 1 {
		attempt = 1
	}
	if attempt <= 32 {
		if exp := base << (attempt - 1); exp > 0 && exp < max {
			d = exp
		}
	}
	return d/2 + time.Duration(jitter*float64(d/2))
}

// classify sorts a Consul error into the state of the link. A 429 is
// Consul's answer to an address holding too many connections to it
// (limits.http_max_conns_per_client): it passes, like a 5xx, and says
// nothing of the request.
func classify(err error) linkState {
	switch {
	case certNotVerified(err):
		return linkUntrusted
	case tlsRefused(err):
		return linkTLSRefused
	case schemeMismatch(err) != "":
		return linkWrongScheme
	}
	var se consul.StatusError
	if errors.As(err, &se) {
		switch {
		case (se.Code == 401 || se.Code == 403) && unknownToken(se):
			return linkUnknownToken
		case se.Code == 401 || se.Code == 403:
			return linkDenied
		case se.Code >= 500 || se.Code == http.StatusTooManyRequests:
			return linkUnreachable
		default:
			return linkRejected
		}
	}
	return linkUnreachable
}
