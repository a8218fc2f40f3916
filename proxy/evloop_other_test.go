//go:build !linux

package proxy

import "slices"

// idleAppConns returns the pool's idle app connections.
func idleAppConns(tp *testProxy) []*upConn {
	tp.pool.mu.Lock()
	defer tp.pool.mu.Unlock()
	return slices.Clone(tp.pool.idle)
}
