//go:build !linux

package proxy

// Event loops are for Linux's epoll; elsewhere every connection is served
// by a goroutine of its own.

type connEv struct {
	sent    int
	writing bool
	pend    []byte
}

type evLoops struct{}

type evLoop struct{}

func (*reader) unregister() {}

func startEvLoops(*Proxy) (*evLoops, error) { return nil, nil }

func (*evLoops) park(*conn) {}
func (*evLoops) wake()      {}
func (*evLoops) stop()      {}

func (c *conn) writeNowPend([]byte) error { return nil }
func (c *conn) writePend() error          { return nil }
func (c *conn) dropPend()                 {}
