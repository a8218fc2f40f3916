//go:build tools

// Package tools pins kube-apiserver and kube-controller-manager, the
// Kubernetes control plane that the scaling-loop tests run, so that
// `go build` in this module builds them at a known version with their own
// dependency set.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
