package proxy

import (
	"io"
	"sync"
	"syscall"
)

// bufSize is the read buffer of every client connection: a
// request head of that size is read in one go; larger heads
// grow the buffer up to Config.MaxHeaderBytes.
const bufSize = 4 << 10

// copyBufSize is the buffer of a body copy that goes past what is buffered.
const copyBufSize = 32 << 10

// bulkBufSize is the buffer of a body copy that has more than copyBufSize
// left: a mebibyte goes through in 8 reads and 8 writes rather than 32 of
// each. It is held only while one read and its write run.
const bulkBufSize = 128 << 10

var (
	smallBufs = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}
	copyBufs  = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}
	bulkBufs  = sync.Pool{New: func() any { b := make([]byte, bulkBufSize); return &b }}
)

// reader is a buffered reader over one connection, like bufio.Reader but
// with the buffer exposed, so that heads are parsed in place. It holds a
// pooled buffer only while it has unread bytes: an idle connection costs
// no buffer. A large head grows the buffer up to a limit.
type reader struct {
	rd   io.Reader
	pool *sync.Pool // where its buffers come from: smallBufs or copyBufs
	bp   *[]byte    // the pooled buffer, when buf is one
	buf  []byte
	r, w int

	// Set by rawWait. The functions given to rc are made once: a closure
	// made per call would be allocated per call.
	rc      syscall.RawConn
	tryFn   func(fd uintptr) bool
	rn      int
	rerr    error
	writeFn func(fd uintptr) bool
	// sendFn and the fields below serve sendThenFill: send is what is left
	// to write, sending is set until it is all written, then is called
	// once it is, serr is the write's error.
	sendFn  func(fd uintptr) bool
	send    []byte
	sending bool
	then    func()
	serr    error
	// intoFn and into serve readInto.
	intoFn func(fd uintptr) bool
	into   []byte
	// peekFn and peeked serve peek; fdFn and sysFd serve fd.
	peekFn func(fd uintptr)
	peeked int
	fdFn   func(fd uintptr)
	sysFd  int
	// evl is the event loop whose epoll instance has the socket.
	evl *evLoop
	// The write in progress, set by write; the body's goroutine may write
	// to the app while the connection's goroutine reads from it, so these
	// are apart from the read side's fields.
	wp   []byte
	werr error
}

func newReader(rd io.Reader) *reader {
	return newReaderFrom(rd, &smallBufs)
}

// newAppReader returns the reader of an app connection. It reads into a
// copy buffer: an answer of up to 32 KiB, head and body, is read in one
// system call and written to the client in one. The buffer is held only
// while an answer is being copied.
func newAppReader(rd io.Reader) *reader {
	return newReaderFrom(rd, &copyBufs)
}

func newReaderFrom(rd io.Reader, pool *sync.Pool) *reader {
	b := &reader{rd: rd, pool: pool}
	b.rawWait(rd)
	return b
}

// acquire makes sure there is a buffer.
func (b *reader) acquire() {
	if b.buf == nil {
		b.bp = b.pool.Get().(*[]byte)
		b.buf = *b.bp
	}
}

// release gives the buffer back; unread bytes are dropped.
func (b *reader) release() {
	if b.bp != nil {
		b.pool.Put(b.bp)
		b.bp = nil
	}
	b.buf = nil
	b.r, b.w = 0, 0
}

// buffered returns the unread bytes.
func (b *reader) buffered() []byte { return b.buf[b.r:b.w] }

// releaseIfEmpty gives the buffer back when nothing is left in it. A
// chunked body's lines are read in place, without discard, so the end of
// such a body leaves an empty buffer held.
func (b *reader) releaseIfEmpty() {
	if b.r == b.w {
		b.release()
	}
}

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
	n, err := b.readInto(b.buf[b.w:])
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
		b.pool.Put(b.bp)
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

// reset makes b a reader over rd, as newReader would, keeping the
// functions it made for RawConn.Read and Write, which are bound to b. It
// holds no buffer: release gave it back.
func (b *reader) reset(rd io.Reader) {
	*b = reader{rd: rd, pool: b.pool,
		tryFn: b.tryFn, writeFn: b.writeFn, sendFn: b.sendFn, intoFn: b.intoFn, peekFn: b.peekFn, fdFn: b.fdFn}
	b.rawWait(rd)
}

// attach makes b a reader over rd, keeping what it buffered: a connection
// an event loop accepted gets its net.Conn after its first bytes came.
func (b *reader) attach(rd io.Reader) {
	b.rd = rd
	b.rawWait(rd)
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
	b.sysFd = -1
	if b.tryFn == nil {
		b.tryFn = b.try
		b.writeFn = b.tryWrite
		b.sendFn = b.trySend
		b.intoFn = b.tryInto
		b.peekFn = b.tryPeek
		b.fdFn = b.setFd
	}
}

// fd returns the descriptor of the reader's socket, which an event loop
// reads and writes while no goroutine does.
func (b *reader) fd() int {
	if b.sysFd < 0 {
		_ = b.rc.Control(b.fdFn)
	}
	return b.sysFd
}

func (b *reader) setFd(fd uintptr) { b.sysFd = int(fd) }

// Results of reader.peek.
const (
	peekEmpty = iota // nothing to read yet: the peer is there
	peekData         // bytes wait
	peekGone         // end of stream or an error
)

// peek looks at the connection without reading from it or blocking, and
// without allocating: peekEmpty, peekData or peekGone. It goes through
// RawConn.Control, not Read: Read would wait behind another goroutine's
// read (a request body being read from the same client), and it fails once
// the read deadline has passed, which says nothing about the peer. A
// reader over a connection without a descriptor finds it empty.
func (b *reader) peek() int {
	if b.rc == nil {
		return peekEmpty
	}
	b.peeked = peekGone
	if err := b.rc.Control(b.peekFn); err != nil {
		return peekGone
	}
	return b.peeked
}

func (b *reader) tryPeek(fd uintptr) { b.peeked = peekFd(fd) }

// peekFd looks at the non-blocking socket fd without taking anything from
// it: peekEmpty, peekData or peekGone.
func peekFd(fd uintptr) int {
	n, err := peekNow(fd)
	switch {
	case n > 0:
		return peekData
	case err == syscall.EAGAIN, err == syscall.EINTR:
		return peekEmpty
	default:
		return peekGone
	}
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

// readFd reads once from fd into the buffer, growing it up to limit when
// it is full, as fill does; it is called with the descriptor in hand, from
// inside a RawConn.Read. It reports whether the read emptied the socket
// (it returned less than there was room for): then only bytes that arrive
// later are left, and the poller announces those. Nothing there is
// syscall.EAGAIN; the end of the stream is io.EOF.
func (b *reader) readFd(fd uintptr, limit int) (emptied bool, err error) {
	b.acquire()
	if !b.makeRoom(limit) {
		return false, errHeadTooLarge
	}
	room := b.buf[b.w:]
	for {
		n, err := readNow(fd, room)
		switch {
		case err == syscall.EINTR:
			continue
		case err != nil:
			if b.w == b.r {
				b.release()
			}
			return err == syscall.EAGAIN, err
		case n == 0:
			if b.w == b.r {
				b.release()
			}
			return true, io.EOF
		}
		b.w += n
		return n < len(room), nil
	}
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

// sendThenFill writes p, a request, and then reads the first bytes of its
// answer into the empty buffer, without the read that fill tries before it
// waits: that read would find nothing, as the answer cannot be there yet.
// Both happen inside one RawConn.Read, whose start resets the poller's
// readiness: every byte of the answer arrives after it, as the request is
// written after it, so its arrival wakes the wait; a wait started in a
// RawConn.Read of its own could miss an answer that came before it.
//
// then, when not nil, is called as soon as all of p is written, before the
// wait: it starts the goroutine that streams the request's body, whose
// writes go through write and do not touch the fields used here.
//
// It returns what is left of p when the socket would not take it all (then
// nothing was read, then was not called, and the caller writes the rest
// and fills as usual), or all of p when nothing could be tried. A write
// error is returned as is; a read deadline that passed after p was sent
// returns the timeout.
func (b *reader) sendThenFill(p []byte, then func()) (rest []byte, err error) {
	b.send, b.sending, b.then, b.serr = p, true, then, nil
	b.rn, b.rerr = 0, nil
	err = b.rc.Read(b.sendFn)
	rest, serr, sent := b.send, b.serr, !b.sending
	b.send, b.sending, b.then, b.serr = nil, false, nil, nil
	switch {
	case serr != nil:
		b.release()
		return nil, serr
	case len(rest) > 0:
		return rest, nil
	case err != nil:
		b.release()
		if !sent {
			return p, nil
		}
		return nil, err
	}
	return nil, b.advance(b.rn, b.rerr)
}

// trySend writes the request of sendThenFill, and then, when the poller
// says the socket is readable, reads.
func (b *reader) trySend(fd uintptr) bool {
	if !b.sending {
		return b.try(fd)
	}
	for len(b.send) > 0 {
		n, err := writeNow(fd, b.send)
		switch {
		case err == syscall.EAGAIN:
			return true
		case err == syscall.EINTR:
			continue
		case err != nil:
			b.serr = err
			return true
		}
		b.send = b.send[n:]
	}
	b.sending = false
	if b.then != nil {
		b.then()
	}
	return false
}

// readInto reads once into p, waiting for bytes in a RawConn.Read and
// reading them with the raw read call (see readNow); fill reads into the
// buffer through it. A reader over a connection without a descriptor
// reads from it.
func (b *reader) readInto(p []byte) (int, error) {
	if b.rc == nil {
		return b.rd.Read(p)
	}
	b.into, b.rn, b.rerr = p, 0, nil
	err := b.rc.Read(b.intoFn)
	b.into = nil
	if err != nil {
		return 0, err
	}
	return b.rn, b.rerr
}

// tryInto is readInto's try.
func (b *reader) tryInto(fd uintptr) bool {
	n, err := readNow(fd, b.into)
	if err == syscall.EAGAIN || err == syscall.EINTR {
		return false
	}
	b.rn, b.rerr = max(n, 0), err
	if n == 0 && err == nil {
		b.rerr = io.EOF
	}
	return true
}
