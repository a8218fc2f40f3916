// Package injectapi holds the tests that send what `outrider inject` writes
// to a real kube-apiserver, so that its output and its refusals are checked
// against the API server's own validation rather than a copy of its rules.
package injectapi
