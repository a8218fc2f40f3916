//go:build tools

// Package tools pins KEDA's operator and metrics adapter, which turn the
// ScaledObject that deploy/k8s ships into an HPA and serve it the metric,
// so that `go build` in this module builds them at a known version with
// their own dependency set.
package tools

import (
	_ "github.com/kedacore/keda/v2/cmd/adapter"
	_ "github.com/kedacore/keda/v2/cmd/operator"
)
