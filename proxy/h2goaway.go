package proxy

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// An HTTP/2 connection is told to go away in two steps, as gRPC's and
// nghttp2's servers tell theirs (RFC 9113, section 6.8). The first GOAWAY
// names every stream processed, so that none the client sent before
// reading it is refused, and carries a PING; the client's answer to the
// PING comes after every stream it opened before reading the GOAWAY.
// Only then does the real GOAWAY go, naming the last stream the server
// took. A single GOAWAY refuses the streams the client sent while it was
// on its way: a gRPC client retries such a call once, and loses it when
// the retry is refused too, as it is when it lands on a new connection to
// a replica whose drain delay tells each connection to go away.
//
// net/http's HTTP/2 server sends one GOAWAY. h2Conn does the first step
// itself, between the server's frames, and on the PING's answer hands the
// server a GOAWAY as if from the client, which makes the server send its
// own with the last stream it took, and close the connection once its
// streams are done, as a drain's GOAWAY does.

// goAwayAckWait bounds how long the drain waits for clients to answer the
// first GOAWAY's PING before the HTTP/2 server sends its own GOAWAY to
// every connection.
const goAwayAckWait = time.Second

// noticePing is the PING that goes with the first GOAWAY; its answer
// carries the same 8 bytes.
var noticePing = [8]byte{'g', 'o', 'i', 'n', 'g', 'a', 'w', 'y'}

// goAwayNotice is the first step: a GOAWAY whose last stream is 2^31-1
// with NO_ERROR, then the PING.
var goAwayNotice = append([]byte{
	0, 0, 8, 0x7, 0, 0, 0, 0, 0, // GOAWAY: length 8, stream 0
	0x7f, 0xff, 0xff, 0xff, // last stream ID 2^31-1
	0, 0, 0, 0, // NO_ERROR
	0, 0, 8, 0x6, 0, 0, 0, 0, 0, // PING: length 8, stream 0
}, noticePing[:]...)

// goAwayNoStream is a GOAWAY whose last stream is 0 with NO_ERROR: from
// the server, none of the client's streams was processed; handed to the
// server as the client's, it starts the server's graceful shutdown.
var goAwayNoStream = []byte{
	0, 0, 8, 0x7, 0, 0, 0, 0, 0, // GOAWAY: length 8, stream 0
	0, 0, 0, 0, // last stream ID
	0, 0, 0, 0, // error code NO_ERROR
}

// h2Conn is an HTTP/2 client connection as the HTTP/2 server sees it. It
// follows the frames each way, so that notice can put the first GOAWAY
// between two of the server's frames and the server's reads can be given
// the client's GOAWAY once the PING is answered.
type h2Conn struct {
	net.Conn
	// timeout bounds a write of the notice that no write of the server's
	// carries.
	timeout time.Duration

	noticed atomic.Bool
	// sent is set once the notice has been written: only then is a PING
	// answer with its bytes the client's answer to it.
	sent atomic.Bool
	// told is closed once the server has read the client's GOAWAY, or the
	// connection has ended.
	told     chan struct{}
	tellOnce sync.Once

	// wmu orders the server's writes, and its write deadlines, with the
	// notice's.
	wmu sync.Mutex
	out frameCursor
	// pending is a notice waiting for the end of the frame the server is
	// writing (or for its first frame, the SETTINGS it opens with).
	pending bool

	// Only the server's reading goroutine uses these.
	in     frameCursor
	inDone bool   // the PING's answer has come: nothing more to follow
	inject []byte // the client's GOAWAY, still to be read
	// held is what the read that brought the PING's answer brought after
	// it, and heldErr its error, read after the GOAWAY.
	held    []byte
	heldErr error
}

func newH2Conn(nc net.Conn, timeout time.Duration) *h2Conn {
	c := &h2Conn{Conn: nc, timeout: timeout, told: make(chan struct{})}
	c.in.skip = len(h2Preface) // the bytes before the client's first frame
	return c
}

// notice tells the client to go away, once: the first GOAWAY and its
// PING go after the frame the server is writing, or at once if it is
// writing none.
func (c *h2Conn) notice() {
	if c.noticed.Swap(true) {
		return
	}
	go func() {
		c.wmu.Lock()
		defer c.wmu.Unlock()
		c.pending = true
		if !c.out.between() {
			return // the server's next write ends its frame and carries it
		}
		_ = c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
		err := c.sendNotice()
		_ = c.Conn.SetWriteDeadline(time.Time{})
		if err != nil {
			// Part of it may have gone: the frames that follow would not
			// parse. The client is gone or has stopped reading.
			_ = c.Conn.Close()
		}
	}()
}

// sendNotice writes the notice. The caller holds wmu, between frames.
func (c *h2Conn) sendNotice() error {
	c.pending = false
	_, err := c.Conn.Write(goAwayNotice)
	if err == nil {
		c.sent.Store(true)
	}
	return err
}

// Write writes the server's bytes, with a pending notice after the first
// frame that ends in them.
func (c *h2Conn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	n := 0
	if c.pending {
		if k := c.out.toEdge(b); k >= 0 {
			if k > 0 {
				m, err := c.Conn.Write(b[:k])
				c.out.feed(b[:m])
				if n = m; err != nil {
					return n, err
				}
			}
			if err := c.sendNotice(); err != nil {
				return n, err
			}
		}
	}
	m, err := c.Conn.Write(b[n:])
	c.out.feed(b[n : n+m])
	return n + m, err
}

// SetWriteDeadline and SetDeadline wait for a notice being written, whose
// deadline is its own.
func (c *h2Conn) SetWriteDeadline(t time.Time) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.Conn.SetWriteDeadline(t)
}

func (c *h2Conn) SetDeadline(t time.Time) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.Conn.SetDeadline(t)
}

// Read reads the client's bytes, and right after the client's answer to
// the notice's PING, a GOAWAY as if from the client.
func (c *h2Conn) Read(b []byte) (int, error) {
	if len(c.inject) > 0 {
		n := copy(b, c.inject)
		if c.inject = c.inject[n:]; len(c.inject) == 0 {
			c.tell()
		}
		return n, nil
	}
	if len(c.held) > 0 || c.heldErr != nil {
		n := copy(b, c.held)
		c.held = c.held[n:]
		if len(c.held) > 0 {
			return n, nil
		}
		if c.heldErr != nil {
			c.tell()
		}
		return n, c.heldErr
	}
	n, err := c.Conn.Read(b)
	if !c.inDone {
		if k := c.scan(b[:n]); k >= 0 {
			// The answer ends at k: the GOAWAY goes next, and what came
			// after the answer follows it.
			c.inDone = true
			c.inject = goAwayNoStream
			c.held = append([]byte(nil), b[k:n]...)
			c.heldErr, err = err, nil
			n = k
		}
	}
	if err != nil {
		c.tell()
	}
	return n, err
}

// scan follows the client's frames through b and returns where the answer
// to the notice's PING ends in b, or -1.
func (c *h2Conn) scan(b []byte) int {
	at := 0
	for at < len(b) {
		n, ended := c.in.advance(b[at:])
		at += n
		if ended && c.sent.Load() && c.in.isPingAck(noticePing) {
			return at
		}
	}
	return -1
}

// tell marks the connection told (or ended) for the drain's wait.
func (c *h2Conn) tell() { c.tellOnce.Do(func() { close(c.told) }) }

func (c *h2Conn) Close() error {
	c.tell()
	return c.Conn.Close()
}

// frameCursor follows a stream of HTTP/2 frames through its bytes.
type frameCursor struct {
	skip   int // bytes before the first frame (the client's preface)
	head   [9]byte
	nhead  int // bytes of the current frame's header seen
	left   int // bytes of the current frame's payload still to come
	first  [8]byte
	nfirst int   // bytes of first, the payload's start, seen
	frames int64 // frames seen whole
}

// between reports whether the stream is between two frames, with a first
// one behind it.
func (f *frameCursor) between() bool { return f.frames > 0 && f.nhead == 0 && f.skip == 0 }

// advance takes the bytes of b up to the end of the current frame and
// returns how many it took and whether the frame ended with them.
func (f *frameCursor) advance(b []byte) (n int, ended bool) {
	if f.skip > 0 {
		n = min(f.skip, len(b))
		f.skip -= n
		return n, false
	}
	if f.nhead < len(f.head) {
		k := copy(f.head[f.nhead:], b)
		f.nhead += k
		n = k
		if f.nhead < len(f.head) {
			return n, false
		}
		f.left = f.length()
		f.nfirst = 0
	}
	k := min(f.left, len(b)-n)
	if f.nfirst < len(f.first) {
		f.nfirst += copy(f.first[f.nfirst:], b[n:n+k])
	}
	f.left -= k
	n += k
	if f.left > 0 {
		return n, false
	}
	f.nhead = 0
	f.frames++
	return n, true
}

// feed takes all of b.
func (f *frameCursor) feed(b []byte) {
	for len(b) > 0 {
		n, _ := f.advance(b)
		b = b[n:]
	}
}

// toEdge returns how many of b's bytes come before the stream is next
// between frames (0 if it is now), or -1 if b does not get there.
func (f *frameCursor) toEdge(b []byte) int {
	g := *f
	n := 0
	for !g.between() {
		if n == len(b) {
			return -1
		}
		k, _ := g.advance(b[n:])
		n += k
	}
	return n
}

// isPingAck reports whether the frame that just ended is a PING's answer
// carrying data.
func (f *frameCursor) isPingAck(data [8]byte) bool {
	return f.head[3] == 0x6 && f.head[4]&0x1 != 0 && f.length() == 8 && f.nfirst == 8 && f.first == data
}

// length is the payload length in the current frame's header.
func (f *frameCursor) length() int {
	return int(f.head[0])<<16 | int(f.head[1])<<8 | int(f.head[2])
}
