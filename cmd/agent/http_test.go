package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestRefuseBrowsers: a web page cannot drive the admin API, by a
// cross-site request or by a DNS name rebound to loopback; outrider
// prestop, curl and the kubelet (no Sec-Fetch-Site, no Origin) can.
func TestRefuseBrowsers(t *testing.T) {
	tests := []struct {
		name   string
		token  string
		method string
		host   string
		header map[string]string
		want   int
	}{
		{name: "curl", method: "POST", host: "127.0.0.1:15000", want: 200},
		{name: "localhost", method: "POST", host: "localhost:15000", want: 200},
		{name: "IPv6 loopback", method: "GET", host: "[::1]:15000", want: 200},
		{name: "address bar", method: "GET", host: "127.0.0.1:15000", header: map[string]string{"Sec-Fetch-Site": "none"}, want: 200},
		{name: "same origin", method: "POST", host: "127.0.0.1:15000",
			header: map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": "http://127.0.0.1:15000"}, want: 200},
		{name: "form from a page", method: "POST", host: "127.0.0.1:15000",
			header: map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "http://evil.example"}, want: 403},
		{name: "image from a page", method: "GET", host: "127.0.0.1:15000",
			header: map[string]string{"Sec-Fetch-Site": "cross-site"}, want: 403},
		{name: "same site", method: "GET", host: "127.0.0.1:15000",
			header: map[string]string{"Sec-Fetch-Site": "same-site"}, want: 403},
		{name: "old browser's Origin", method: "POST", host: "127.0.0.1:15000",
			header: map[string]string{"Origin": "http://evil.example"}, want: 403},
		{name: "rebound name", method: "GET", host: "evil.example:15000",
			header: map[string]string{"Sec-Fetch-Site": "same-origin"}, want: 421},
		{name: "name with a token", token: "t", method: "GET", host: "outrider.pod:15000", want: 200},
		{name: "cross-site with a token", token: "t", method: "POST", host: "10.0.0.7:15000",
			header: map[string]string{"Sec-Fetch-Site": "cross-site"}, want: 403},
	}
	ok := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, "http://"+tt.host+"/drain", nil)
			for k, v := range tt.header {
				r.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			refuseBrowsers(tt.token, ok).ServeHTTP(w, r)
			if w.Code != tt.want {
				t.Errorf("got %d %q, want %d", w.Code, w.Body, tt.want)
			}
		})
	}
}

// TestRequireToken: the bearer scheme is matched in any case (RFC 7235),
// the token exactly; the answer never holds either token.
func TestRequireToken(t *testing.T) {
	tests := []struct {
		name   string
		header string
		want   int
	}{
		{name: "bearer", header: "Bearer s3cret", want: 200},
		{name: "lower-case scheme", header: "bearer s3cret", want: 200},
		{name: "upper-case scheme", header: "BEARER s3cret", want: 200},
		{name: "two spaces", header: "Bearer  s3cret", want: 200},
		{name: "none", header: "", want: 401},
		{name: "token alone", header: "s3cret", want: 401},
		{name: "wrong token", header: "Bearer s3cre", want: 401},
		{name: "token in another case", header: "Bearer S3CRET", want: 401},
		{name: "other scheme", header: "Basic s3cret", want: 401},
		{name: "scheme glued to the token", header: "Bearers3cret", want: 401},
	}
	ok := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "http://127.0.0.1:15000/status", nil)
			if tt.header != "" {
				r.Header.Set("Authorization", tt.header)
			}
			w := httptest.NewRecorder()
			requireToken("s3cret", ok).ServeHTTP(w, r)
			if w.Code != tt.want {
				t.Errorf("got %d %q, want %d", w.Code, w.Body, tt.want)
			}
			if body := strings.ToLower(w.Body.String() + fmt.Sprint(w.Header())); strings.Contains(body, "s3cre") {
				t.Errorf("answer %q %v holds the token", w.Body, w.Header())
			}
		})
	}
}
