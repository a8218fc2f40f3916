// Package h1 follows HTTP/1.1 framing for the bench's minimal event-loop
// proxies (cmd/goloop, cmd/gnetloop): where each head and body ends, and
// the one rewrite they make to keep app connections open.
package h1

import "bytes"

// What a Framer is reading.
const (
	inHead = iota
	inBody
	inUntilClose
	inChunkSize
	inChunkExt
	inChunkData
	inChunkEnd
	inTrailer
)

// Framer follows the messages on one side of a connection: where each
// head and body ends. It keeps a head that came in pieces until it is
// whole; every other byte it only looks at.
type Framer struct {
	Resp  bool // responses; requests otherwise
	state int
	head  []byte // a head's first pieces
	left  int64  // body or chunk bytes left; the chunk size being read
	// Closed is set when the last request head asked to close the
	// connection (its "close" is blanked, see blankClose).
	Closed bool
	// line is set while a trailer line has bytes other than CR.
	line bool
	// HeadAt is where in the bytes of the last scan the last head that
	// came whole in them began, or -1.
	HeadAt int
}

// Clean reports whether the Framer is between messages, so that its
// connection can carry another.
func (f *Framer) Clean() bool { return f.state == inHead && len(f.head) == 0 }

// Scan reads b, in order, and returns how many heads began in it and how
// many messages ended.
func (f *Framer) Scan(b []byte) (heads, ends int) {
	f.HeadAt = -1
	all := len(b)
	for len(b) > 0 {
		switch f.state {
		case inHead:
			var h []byte
			var n int
			if len(f.head) == 0 {
				i := bytes.Index(b, []byte("\r\n\r\n"))
				if i < 0 {
					f.head = append(f.head, b...)
					return heads, ends
				}
				h, n = b[:i+4], i+4
				f.HeadAt = all - len(b)
			} else {
				had := len(f.head)
				f.head = append(f.head, b...)
				i := bytes.Index(f.head, []byte("\r\n\r\n"))
				if i < 0 {
					return heads, ends
				}
				h, n = f.head[:i+4], i+4-had
			}
			b = b[n:]
			heads++
			if f.headDone(h) {
				ends++
			}
			f.head = f.head[:0]
		case inBody:
			k := min(int64(len(b)), f.left)
			b, f.left = b[k:], f.left-k
			if f.left == 0 {
				f.state = inHead
				ends++
			}
		case inUntilClose:
			return heads, ends
		case inChunkSize, inChunkExt:
			c := b[0]
			b = b[1:]
			switch {
			case c == '\n' && f.left == 0:
				f.state, f.line = inTrailer, false
			case c == '\n':
				f.state = inChunkData
			case c == ';' || f.state == inChunkExt:
				f.state = inChunkExt
			case c >= '0' && c <= '9':
				f.left = f.left<<4 | int64(c-'0')
			case c|0x20 >= 'a' && c|0x20 <= 'f':
				f.left = f.left<<4 | int64(c|0x20-'a'+10)
			}
		case inChunkData:
			k := min(int64(len(b)), f.left)
			b, f.left = b[k:], f.left-k
			if f.left == 0 {
				f.state, f.left = inChunkEnd, 2
			}
		case inChunkEnd:
			k := min(int64(len(b)), f.left)
			b, f.left = b[k:], f.left-k
			if f.left == 0 {
				f.state = inChunkSize
			}
		case inTrailer:
			c := b[0]
			b = b[1:]
			switch {
			case c == '\n' && !f.line:
				f.state = inHead
				ends++
			case c == '\n':
				f.line = false
			case c != '\r':
				f.line = true
			}
		}
	}
	return heads, ends
}

// headDone sets the state that follows head h, and reports whether its
// message ended with it (no body).
func (f *Framer) headDone(h []byte) bool {
	f.left = 0
	if !f.Resp {
		f.Closed = blankClose(h)
	}
	if f.Resp {
		code := 0
		if len(h) >= 12 {
			code = int(h[9]-'0')*100 + int(h[10]-'0')*10 + int(h[11]-'0')
		}
		if code < 200 || code == 204 || code == 304 {
			return true
		}
	}
	if i := indexFold(h, "\r\ntransfer-encoding:"); i >= 0 && indexFold(h[i:], "chunked") >= 0 {
		f.state = inChunkSize
		return false
	}
	if i := indexFold(h, "\r\ncontent-length:"); i >= 0 {
		n := int64(0)
		for _, c := range h[i+len("\r\ncontent-length:"):] {
			if c == ' ' {
				continue
			}
			if c < '0' || c > '9' {
				break
			}
			n = n*10 + int64(c-'0')
		}
		if n > 0 {
			f.state, f.left = inBody, n
			return false
		}
		return true
	}
	if f.Resp {
		f.state = inUntilClose
		return false
	}
	return true
}

// blankClose turns a request head's "Connection: close" into an empty
// Connection field, so that the app keeps its connection, and reports
// whether it did.
func blankClose(head []byte) bool {
	i := indexFold(head, "\r\nconnection:")
	if i < 0 {
		return false
	}
	v := head[i+len("\r\nconnection:"):]
	v = v[:bytes.IndexByte(v, '\r')]
	j := indexFold(v, "close")
	if j < 0 {
		return false
	}
	copy(v[j:], "     ")
	return true
}

// indexFold returns the index of lower in b, ASCII letters in b matched
// without regard to case, or -1.
func indexFold(b []byte, lower string) int {
	for i := 0; i+len(lower) <= len(b); i++ {
		k := 0
		for k < len(lower) && toLower(b[i+k]) == lower[k] {
			k++
		}
		if k == len(lower) {
			return i
		}
	}
	return -1
}

func toLower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// SayClose appends to dst b with "Connection: close" added to the
// response head at b[at:], so that the client expects the close that
// follows the answer; the app was asked to keep its connection
// (blankClose). It reports false, and leaves dst, when the head's first
// line is not whole in b.
func SayClose(dst, b []byte, at int) ([]byte, bool) {
	i := bytes.Index(b[at:], []byte("\r\n"))
	if i < 0 {
		return dst, false
	}
	i += at + 2
	dst = append(dst, b[:i]...)
	dst = append(dst, "Connection: close\r\n"...)
	return append(dst, b[i:]...), true
}
