//go:build !linux

package proxy

import "net"

// Event loops are for Linux's epoll; elsewhere every connection is served
// by a goroutine of its own.

type connEv struct {
	cfd     int
	sent    int
	writing bool
	pend    []byte
}

type evLoops struct{}

type evLoop struct{}

func (*reader) unregister() {}

func startEvLoops(*Proxy, net.Listener) (*evLoops, error) { return nil, nil }

func (*evLoops) park(*conn)    {}
func (*evLoops) accepts() bool { return false }

func (*evLoops) waitFailure(<-chan struct{}) bool { return false }

func closeNow(int)                 {}
func (*evLoops) wake()             {}
func (*evLoops) stealApp() *upConn { return nil }
func (*evLoops) stop()             {}

func (c *conn) writeNowPend([]byte) error { return nil }
func (c *conn) writePend() error          { return nil }
func (c *conn) dropPend()                 {}
