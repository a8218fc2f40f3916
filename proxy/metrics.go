package proxy

import (
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Status codes are counted in an array indexed by code-minCode; 499 is the
// proxy's own code for a client that went away.
const (
	minCode  = 100
	numCodes = 500
	// CodeClientGone is counted when the client disconnects before its
	// response is complete, as nginx logs it.
	CodeClientGone = 499
)

var codeNames = func() (s [numCodes]string) {
	for i := range s {
		s[i] = strconv.Itoa(minCode + i)
	}
	return s
}()

var requestsDesc = prometheus.NewDesc("outrider_http_requests_total",
	"Requests answered by outrider's proxy: forwarded to the app, or refused by the proxy itself (400, 405, 408, 431, 505); by method (standard methods, else OTHER) and status code (499: the client went away first).",
	[]string{"method", "code"}, nil)

// metrics is the proxy's instrumentation. Counting a request touches only
// atomics and pre-built histograms: no label lookup, no allocation.
type metrics struct {
	requests [numMethods][numCodes]atomic.Uint64
	inFlight atomic.Int64
	duration prometheus.Histogram
	reqSize  prometheus.Histogram
	respSize prometheus.Histogram
	rate     *rateMeter

	// Connection-level events, off the per-request path.
	acceptErrors      prometheus.Counter
	rejected          prometheus.Counter
	underscoreDropped prometheus.Counter
}

// newMetrics registers the proxy's metrics on reg; tunnels is the count of
// open tunnels, which the proxy keeps.
func newMetrics(reg prometheus.Registerer, window time.Duration, now func() time.Time, tunnels *atomic.Int64) (*metrics, error) {
	m := &metrics{rate: newRateMeter(window)}
	m.duration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:                            "outrider_http_request_duration_seconds",
		Help:                            "Time from a request's head being read to its response's last byte being written, through outrider's proxy.",
		Buckets:                         []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		NativeHistogramBucketFactor:     1.1,
		NativeHistogramMaxBucketNumber:  160,
		NativeHistogramMinResetDuration: time.Hour,
	})
	sizes := prometheus.ExponentialBuckets(64, 4, 9) // 64 B … 4 MiB
	m.reqSize = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "outrider_http_request_size_bytes",
		Help:    "Body size of the requests forwarded by outrider's proxy.",
		Buckets: sizes,
	})
	m.respSize = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "outrider_http_response_size_bytes",
		Help:    "Body size of the responses forwarded by outrider's proxy.",
		Buckets: sizes,
	})
	cs := []prometheus.Collector{
		requestsCollector{m},
		m.duration, m.reqSize, m.respSize,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "outrider_http_requests_in_flight",
			Help: "Requests outrider's proxy is forwarding now.",
		}, func() float64 { return float64(m.inFlight.Load()) }),
		m.newCounter(&m.acceptErrors, "outrider_proxy_accept_errors_total",
			"Accepts on the proxy listener that failed for a reason that passes (out of file descriptors, a connection reset before it was taken); the proxy retries them with backoff."),
		m.newCounter(&m.rejected, "outrider_proxy_connections_rejected_total",
			"Client connections closed as soon as they were accepted because OUTRIDER_PROXY_MAX_CONNS were open."),
		m.newCounter(&m.underscoreDropped, "outrider_proxy_header_fields_dropped_total",
			"Request header fields not forwarded to the app because their name holds an underscore (OUTRIDER_PROXY_UNDERSCORE_HEADERS=drop)."),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "outrider_proxy_tunnels",
			Help: "Upgraded connections (WebSocket) the proxy is relaying now.",
		}, func() float64 { return float64(tunnels.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "outrider_http_requests_per_second",
			Help: "Requests per second through outrider's proxy, over the last " + window.String() + " (OUTRIDER_QPS_WINDOW).",
		}, func() float64 { return m.rate.rate(now()) }),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// newCounter makes a counter, stores it in *c and returns it.
func (m *metrics) newCounter(c *prometheus.Counter, name, help string) prometheus.Counter {
	*c = prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	return *c
}

// count records one finished request.
func (m *metrics) count(method, code int, d time.Duration, end time.Time, reqBytes, respBytes int64) {
	if code < minCode || code >= minCode+numCodes {
		code = 502
	}
	m.requests[method][code-minCode].Add(1)
	m.duration.Observe(d.Seconds())
	m.reqSize.Observe(float64(reqBytes))
	m.respSize.Observe(float64(respBytes))
	m.rate.add(end)
}

// answered returns the number of requests counted so far.
func (m *metrics) answered() uint64 {
	var n uint64
	for method := range m.requests {
		for code := range m.requests[method] {
			n += m.requests[method][code].Load()
		}
	}
	return n
}

// requestsCollector exposes the request counters at scrape time; a series
// appears once its first request is counted, but for the codes of
// errorsFromZero.
type requestsCollector struct{ m *metrics }

// errorsFromZero are the server-error codes exported from 0 for every
// method that has had a request. rate() and increase() do not count a
// series' first value, so a burst of errors that made its series appear
// between two scrapes would never show in an error ratio or an alert;
// a series that is there at 0 beforehand counts its first burst.
var errorsFromZero = [...]int{500, 502, 503, 504}

func (c requestsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- requestsDesc }

func (c requestsCollector) Collect(ch chan<- prometheus.Metric) {
	for method := range c.m.requests {
		counts := &c.m.requests[method]
		var seen [numCodes]bool
		for code := range counts {
			if n := counts[code].Load(); n > 0 {
				seen[code] = true
				ch <- prometheus.MustNewConstMetric(requestsDesc, prometheus.CounterValue,
					float64(n), methodNames[method], codeNames[code])
			}
		}
		if !slices.Contains(seen[:], true) {
			continue
		}
		for _, code := range errorsFromZero {
			if !seen[code-minCode] {
				ch <- prometheus.MustNewConstMetric(requestsDesc, prometheus.CounterValue,
					0, methodNames[method], codeNames[code-minCode])
			}
		}
	}
}

// rateMeter counts events in one-second buckets over a sliding window.
// Each bucket packs its second (high 32 bits) and its count (low 32 bits)
// into one word, so that adding is a compare-and-swap and a bucket that
// comes round again starts from zero without a lock.
type rateMeter struct {
	window  int64 // whole seconds
	buckets []atomic.Uint64
}

func newRateMeter(window time.Duration) *rateMeter {
	w := int64((window + time.Second - 1) / time.Second)
	if w < 1 {
		w = 1
	}
	return &rateMeter{window: w, buckets: make([]atomic.Uint64, w+2)}
}

// add counts one event at t.
func (r *rateMeter) add(t time.Time) {
	sec := uint64(uint32(t.Unix()))
	b := &r.buckets[sec%uint64(len(r.buckets))]
	for {
		old := b.Load()
		next := sec<<32 | 1
		if old>>32 == sec {
			next = old + 1
		}
		if b.CompareAndSwap(old, next) {
			return
		}
	}
}

// rate is the events per second over the window's whole seconds before
// now: the current, partial second is left out so the figure does not dip
// at each second's start.
func (r *rateMeter) rate(now time.Time) float64 {
	cur := uint64(uint32(now.Unix()))
	var sum uint64
	for i := range r.buckets {
		v := r.buckets[i].Load()
		age := uint32(cur) - uint32(v>>32)
		if age >= 1 && int64(age) <= r.window {
			sum += v & 0xffffffff
		}
	}
	return float64(sum) / float64(r.window)
}

// windowSeconds is the window over which rate is computed.
func (r *rateMeter) windowSeconds() float64 { return float64(r.window) }
