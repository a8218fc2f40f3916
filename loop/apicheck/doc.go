// Package apicheck holds the tests that send what outrider ships for
// Kubernetes (deploy/k8s's kustomizations and what `outrider inject`
// writes) to a real kube-apiserver, so that they are checked against the
// API server's own validation rather than a copy of its rules.
package apicheck
