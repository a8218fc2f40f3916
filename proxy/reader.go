package proxy

import (
	"io"
	"sync"
	"syscall"
)

// bufSize is the read buffer of every connection, client or upstream: a
// request or response head of that size is read in one go; larger heads
// grow the buffer up to Config.MaxHeaderBytes.
const bufSize = 4 << 10

// copyBufSize is the buffer of a body copy that goes past what is buffered.
const copyBufSize = 32 << 10

var (
	smallBufs = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}
	copyBufs  = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}
)

// reader is a buffered reader over one connection, like bufio.Reader but
// with the buffer exposed, so that heads are parsed in place. It holds a
// pooled buffer only while it has unread bytes: an idle connection costs
// no buffer. A large head grows the buffer up to a limit.
type reader struct {
	rd   io.Reader
	bp   *[]byte // the pooled buffer, when buf is one
	buf  []byte
	r, w int

	// Set by rawWait. The functions given to rc are made once: a closure
	// made per call would be allocated per call.
	rc      syscall.RawConn
	tryFn   func(fd uintptr) bool
	rn      int
	rerr    error
	writeFn func(fd uintptr) bool
	// The write in progress, set by write; the body's goroutine may write
	// to the app while the connection's goroutine reads from it, so these
	// are apart from the read side's fields.
	wp   []byte
	werr error
}

func newReader(rd io.Reader) *reader {
	b := &reader{rd: rd}
	b.rawWait(rd)
	return b
}

// acquire makes sure there is a buffer.
func (b *reader) acquire() {
	if b.buf == nil {
		b.bp = smallBufs.Get().(*[]byte)
		b.buf = *b.bp
	}
}

// release gives the buffer back; unread bytes are dropped.
func (b *reader) release() {
	if b.bp != nil {
		smallBufs.Put(b.bp)
		b.bp = nil
	}
	b.buf = nil
	b.r, b.w = 0, 0
}

// buffered returns the unread bytes.
func (b *reader) buffered() []byte { return b.buf[b.r:b.w] }

// discard drops n buffered bytes.
func (b *reader) discard(n int) {
	b.r += n
	if b.r == b.w {
		b.release()
	}
}

// fill reads once more into the buffer, growing it up to limit when it is
// full. It returns errHeadTooLarge when it cannot grow.
func (b *reader) fill(limit int) error {
	if b.rc != nil && b.buf == nil {
		return b.fillEmpty()
	}
	b.acquire()
	if !b.makeRoom(limit) {
		return errHeadTooLarge
	}
	n, err := b.rd.Read(b.buf[b.w:])
	return b.advance(n, err)
}

// makeRoom moves the unread bytes to the front and grows a full buffer.
func (b *reader) makeRoom(limit int) bool {
	if b.r > 0 {
		n := copy(b.buf, b.buf[b.r:b.w])
		b.r, b.w = 0, n
	}
	if b.w < len(b.buf) {
		return true
	}
	if len(b.buf) >= limit {
		return false
	}
	grown := make([]byte, min(2*len(b.buf), limit))
	copy(grown, b.buf[:b.w])
	if b.bp != nil {
		smallBufs.Put(b.bp)
		b.bp = nil
	}
	b.buf = grown
	return true
}

func (b *reader) advance(n int, err error) error {
	if n > 0 {
		b.w += n
		return nil
	}
	if b.w == b.r {
		b.release()
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// rawWait sets up fill to wait for a socket to become readable without
// holding a buffer: the buffer is taken from the pool only once bytes are
// there. That is what keeps a thousand idle keep-alive connections, and
// requests waiting for the app, small.
func (b *reader) rawWait(nc io.Reader) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	b.rc = rc
	b.tryFn = b.try
	b.writeFn = b.tryWrite
}

// try is called by the poller whenever the connection may be readable.
func (b *reader) try(fd uintptr) bool {
	b.acquire()
	n, err := readNow(fd, b.buf[b.w:])
	if err == syscall.EAGAIN || err == syscall.EINTR {
		if b.w == b.r {
			b.release()
		}
		return false
	}
	b.rn, b.rerr = max(n, 0), err
	if n == 0 && err == nil {
		b.rerr = io.EOF
	}
	return true
}

// fillEmpty reads into the empty reader once bytes arrive.
func (b *reader) fillEmpty() error {
	b.rn, b.rerr = 0, nil
	if err := b.rc.Read(b.tryFn); err != nil {
		b.release()
		return err
	}
	return b.advance(b.rn, b.rerr)
}

// write writes all of p to the connection, waiting for room when the
// socket is full, within the connection's write deadline. It writes with
// writeNow rather than through nc.Write for the reason given there. A nil
// reader, or one over a connection without a descriptor, writes to nc.
func (b *reader) write(nc io.Writer, p []byte) error {
	if b == nil || b.rc == nil {
		_, err := nc.Write(p)
		return err
	}
	b.wp, b.werr = p, nil
	err := b.rc.Write(b.writeFn)
	b.wp = nil
	if err != nil {
		return err
	}
	return b.werr
}

// tryWrite is called by the poller whenever the connection may be
// writable; it returns false to wait for room.
func (b *reader) tryWrite(fd uintptr) bool {
	for len(b.wp) > 0 {
		n, err := writeNow(fd, b.wp)
		switch {
		case err == syscall.EAGAIN:
			return false
		case err == syscall.EINTR:
			continue
		case err != nil:
			b.werr = err
			return true
		}
		b.wp = b.wp[n:]
	}
	return true
}
