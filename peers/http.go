package peers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/outrider-sidecar/outrider/internal/servicename"
)

var errNotRunning = errors.New("the peer cache is not running")

// ServeHTTP answers with the passing instances of the service named by
// the {service} wildcard of the pattern it is mounted on, as a JSON array
// of Peer. The first request for a service starts its watch and waits up
// to FirstWait for Consul's first answer. A request with query parameters
// is refused: there are no filters to apply them to.
func (c *Cache) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	service := r.PathValue("service")
	if !servicename.Valid(service) {
		c.refuse(rw, http.StatusBadRequest, fmt.Sprintf(
			"invalid service name %q: want letters, digits, '-', '_' and '.', starting with a letter or digit, at most 253 characters", service))
		return
	}
	if r.URL.RawQuery != "" {
		// Silently ignored, a tag or datacenter filter would get every
		// instance, and a blocking query (index, wait) an immediate answer
		// each time: a hot loop.
		c.refuse(rw, http.StatusBadRequest, fmt.Sprintf(
			"query parameters %q: /v1/peers/{service} takes none; it has no tag, datacenter or other filter and no blocking queries, and answers the passing instances at once", queryKeys(r.URL.RawQuery)))
		return
	}
	// The bound on the wait starts only if there is something to wait for.
	var timer <-chan time.Time
	timeout := func() <-chan time.Time {
		if timer == nil {
			timer = c.opts.Clock.After(c.opts.FirstWait)
		}
		return timer
	}
	w, err := c.watchFor(r.Context(), service, timeout)
	switch {
	case errors.Is(err, ErrTooManyServices):
		c.refuse(rw, http.StatusTooManyRequests, err.Error())
		return
	case err != nil:
		c.refuse(rw, http.StatusServiceUnavailable, fmt.Sprintf("service %q: %v", service, err))
		return
	}
	select {
	case <-w.ready:
	default:
		select {
		case <-w.ready:
		case <-r.Context().Done():
			return // the client has gone
		case <-timeout():
			if s := w.snapshot(); s.err != nil {
				c.refuse(rw, http.StatusServiceUnavailable, fmt.Sprintf(
					"no peers for service %q yet: Consul has not answered within %s; last error: %v", service, c.opts.FirstWait, s.err))
				return
			}
			c.refuse(rw, http.StatusGatewayTimeout, fmt.Sprintf(
				"no peers for service %q yet: Consul has not answered within %s", service, c.opts.FirstWait))
			return
		}
	}
	s := w.snapshot()
	h := rw.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Consul-Index", strconv.FormatUint(s.index, 10))
	if s.err != nil {
		// The list is the last one Consul gave; the watch is retrying.
		h.Set("Warning", `110 - "Response is Stale"`)
	}
	if s.filtered {
		// As Consul says it: the list may lack what the token cannot read.
		h.Set("X-Consul-Results-Filtered-By-ACLs", "true")
	}
	c.metrics.requests.WithLabelValues(strconv.Itoa(http.StatusOK)).Inc()
	_ = json.NewEncoder(rw).Encode(s.peers)
}

// watchFor returns the watch of service, asking Run to start it if needed.
func (c *Cache) watchFor(ctx context.Context, service string, timeout func() <-chan time.Time) (*watch, error) {
	if w := c.lookup(service); w != nil {
		return w, nil
	}
	a := ask{service: service, reply: make(chan askReply, 1)}
	select {
	case c.asks <- a:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-timeout():
		return nil, errNotRunning
	}
	rep := <-a.reply // Run replies as soon as it has taken the ask
	return rep.w, rep.err
}

func (c *Cache) refuse(rw http.ResponseWriter, code int, msg string) {
	c.metrics.requests.WithLabelValues(strconv.Itoa(code)).Inc()
	http.Error(rw, msg, code)
}

// queryKeys returns the parameter names of a query string, sorted, or the
// query itself when no name can be read from it.
func queryKeys(raw string) []string {
	q, _ := url.ParseQuery(raw)
	if len(q) == 0 {
		return []string{raw}
	}
	return slices.Sorted(maps.Keys(q))
}
