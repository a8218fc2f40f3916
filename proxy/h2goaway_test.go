package proxy

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// frame is an HTTP/2 frame's bytes.
func frame(typ, flags byte, payload string) string {
	n := len(payload)
	return string([]byte{byte(n >> 16), byte(n >> 8), byte(n), typ, flags, 0, 0, 0, 0}) + payload
}

// bufConn is a connection that writes into a buffer and reads from a
// reader at most chunk bytes at a time.
type bufConn struct {
	net.Conn
	out   bytes.Buffer
	in    io.Reader
	chunk int
}

func (c *bufConn) Write(b []byte) (int, error) { return c.out.Write(b) }

func (c *bufConn) Read(b []byte) (int, error) {
	if len(b) > c.chunk {
		b = b[:c.chunk]
	}
	return c.in.Read(b)
}

func (c *bufConn) SetWriteDeadline(time.Time) error { return nil }
func (c *bufConn) SetDeadline(time.Time) error      { return nil }

// TestH2ConnNoticeGoesBetweenFrames: a notice that comes while the
// server's write has reached any byte goes out after the frame that byte
// belongs to (after the SETTINGS the server opens with, if it comes
// first), never inside a frame, however the server's bytes are split.
func TestH2ConnNoticeGoesBetweenFrames(t *testing.T) {
	frames := []string{
		frame(0x4, 0, "\x00\x04\x00\x01\x00\x00"), // SETTINGS
		frame(0x1, 0x4, "\x88"),                   // HEADERS: 200
		frame(0x0, 0x1, "twenty bytes of data"),   // DATA, END_STREAM
		frame(0x4, 0x1, ""),                       // SETTINGS ack
	}
	stream := ""
	for _, f := range frames {
		stream += f
	}
	for at := 0; at <= len(stream); at++ {
		// Where the notice belongs: after the frame the byte at `at` is in,
		// or after the first frame if nothing was written.
		edge, want := 0, ""
		for i, f := range frames {
			edge += len(f)
			if edge > at || (i == 0 && at == 0) || edge == at {
				want = stream[:edge] + string(goAwayNotice) + stream[edge:]
				break
			}
		}
		if at == len(stream) {
			want = stream + string(goAwayNotice)
		}
		nc := &bufConn{}
		c := newH2Conn(nc, time.Second)
		if _, err := c.Write([]byte(stream[:at])); err != nil {
			t.Fatal(err)
		}
		c.notice()
		// The notice's own goroutine writes it when the stream is
		// between frames; else the next write carries it.
		for c.noticed.Load() && !c.sent.Load() && func() bool {
			c.wmu.Lock()
			defer c.wmu.Unlock()
			return !c.pending
		}() {
			time.Sleep(time.Millisecond)
		}
		// The rest, a byte at a time.
		for i := at; i < len(stream); i++ {
			if _, err := c.Write([]byte{stream[i]}); err != nil {
				t.Fatal(err)
			}
		}
		if got := nc.out.String(); got != want {
			t.Errorf("notice at byte %d: wrote\n%q\nwant\n%q", at, got, want)
		}
	}
}

// TestH2ConnHandsTheServerAGoAway: once the client has answered the
// notice's PING, the server reads a GOAWAY from the client right after
// the answer's frame, however the client's bytes are split, and the
// connection is told; a PING answer before the notice went, or with
// other bytes, hands the server nothing.
func TestH2ConnHandsTheServerAGoAway(t *testing.T) {
	settings := frame(0x4, 0, "")
	ack := frame(0x6, 0x1, string(noticePing[:]))
	other := frame(0x6, 0x1, "12345678")
	headers := frame(0x1, 0x5, "\x82\x86\x84\x41\x01a")
	for _, tc := range []struct {
		name   string
		sent   bool
		client string
		want   string
	}{
		{"answered", true, h2Preface + settings + ack + headers, h2Preface + settings + ack + string(goAwayNoStream) + headers},
		{"answered last", true, h2Preface + settings + ack, h2Preface + settings + ack + string(goAwayNoStream)},
		{"not sent", false, h2Preface + settings + ack + headers, h2Preface + settings + ack + headers},
		{"another PING's answer", true, h2Preface + settings + other + headers, h2Preface + settings + other + headers},
	} {
		for _, chunk := range []int{1, 5, 9, 13, 1 << 10} {
			t.Run(fmt.Sprintf("%s, %d bytes a read", tc.name, chunk), func(t *testing.T) {
				nc := &bufConn{in: bytes.NewReader([]byte(tc.client)), chunk: chunk}
				c := newH2Conn(nc, time.Second)
				c.sent.Store(tc.sent)
				var got bytes.Buffer
				buf := make([]byte, 4<<10)
				for got.Len() < len(tc.want) {
					n, err := c.Read(buf)
					got.Write(buf[:n])
					if err != nil {
						break
					}
				}
				if got.String() != tc.want {
					t.Errorf("the server read\n%q\nwant\n%q", got.String(), tc.want)
				}
				select {
				case <-c.told:
					if tc.want == tc.client {
						t.Error("told, with no GOAWAY handed to the server")
					}
				default:
					if tc.want != tc.client {
						t.Error("not told after the GOAWAY was read")
					}
				}
			})
		}
	}
}
