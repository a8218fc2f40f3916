package proxy

import (
	"net/http"
	"testing"
)

// TestErrorsFromZero: once a method has had a request, its 500, 502, 503
// and 504 series are exported at 0, so that rate() counts the first burst
// of each; a method without requests, and other codes, have no series.
func TestErrorsFromZero(t *testing.T) {
	tp := startProxy(t, startEcho(t), nil)
	if got := tp.series(t); len(got) != 0 {
		t.Fatalf("before any request: %v, want no series", got)
	}
	for _, path := range []string{"/", "/status/503"} {
		resp, err := http.Get("http://" + tp.addr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	tp.settle(t)
	want := map[string]float64{"GET 200": 1, "GET 503": 1, "GET 500": 0, "GET 502": 0, "GET 504": 0}
	got := tp.series(t)
	if len(got) != len(want) {
		t.Errorf("series: got %v, want %v", got, want)
	}
	for k, v := range want {
		if n, ok := got[k]; !ok || n != v {
			t.Errorf("%s: got %v (present %v), want %v", k, n, ok, v)
		}
	}
}
