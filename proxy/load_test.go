package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

// loadClientEnv names the address the test binary, started again by a
// test, loads with requests instead of running tests (see loadClient).
const loadClientEnv = "OUTRIDER_PROXY_TEST_LOAD"

// loadClient sends keep-alive GET requests to addr on 32 connections, as
// fast as they are answered, from a process of its own, so that the
// proxy's loops are busy while nothing of the test's process waits for
// them. It exits after a minute, or once a connection fails.
func loadClient(addr string) {
	fail := make(chan error, 1)
	for range 32 {
		go func() {
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				fail <- err
				return
			}
			br := bufio.NewReader(nc)
			for {
				if _, err := io.WriteString(nc, "GET /load HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
					fail <- err
					return
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					fail <- err
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
		}()
	}
	select {
	case err := <-fail:
		fmt.Fprintf(os.Stderr, "load client: %v\n", err)
		os.Exit(1)
	case <-time.After(time.Minute):
		os.Exit(0)
	}
}
