//go:build tools

// Package tools pins etcd, the store behind the kube-apiserver that the
// scaling-loop tests run, so that `go build` in this module builds it at a
// known version with its own dependency set.
package tools

import _ "go.etcd.io/etcd/server/v3"
