//go:build tools

// Package tools pins the programs that outrider's tests need, so that
// `go build -modfile=tools/go.mod` builds them at a known version.
package tools

import _ "github.com/hashicorp/consul"
