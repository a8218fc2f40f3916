package proxy

import (
	"io"
	"sync"
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
// with the buffer exposed, so that heads are parsed in place, and a buffer
// that grows for a large head and goes back to a pool when released.
type reader struct {
	rd   io.Reader
	buf  []byte
	r, w int
}

func newReader(rd io.Reader) *reader {
	return &reader{rd: rd, buf: *smallBufs.Get().(*[]byte)}
}

// release returns the buffer to its pool; the reader is unusable after.
func (b *reader) release() {
	if cap(b.buf) == bufSize {
		buf := b.buf[:bufSize]
		smallBufs.Put(&buf)
	}
	b.buf = nil
}

// buffered returns the unread bytes.
func (b *reader) buffered() []byte { return b.buf[b.r:b.w] }

// discard drops n buffered bytes.
func (b *reader) discard(n int) {
	b.r += n
	if b.r == b.w {
		b.r, b.w = 0, 0
		if len(b.buf) > bufSize {
			// A large head is gone: go back to a pooled buffer.
			b.buf = *smallBufs.Get().(*[]byte)
		}
	}
}

// fill reads once more into the buffer, growing it up to limit when it is
// full. It returns errHeadTooLarge when it cannot grow.
func (b *reader) fill(limit int) error {
	if b.r > 0 {
		n := copy(b.buf, b.buf[b.r:b.w])
		b.r, b.w = 0, n
	}
	if b.w == len(b.buf) {
		if len(b.buf) >= limit {
			return errHeadTooLarge
		}
		grown := make([]byte, min(2*len(b.buf), limit))
		copy(grown, b.buf[:b.w])
		if cap(b.buf) == bufSize {
			old := b.buf[:bufSize]
			smallBufs.Put(&old)
		}
		b.buf = grown
	}
	n, err := b.rd.Read(b.buf[b.w:])
	b.w += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}
