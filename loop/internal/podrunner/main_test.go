package podrunner_test

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/outrider-sidecar/outrider/internal/testbin"
)

// TestMain runs the tests, or, when the pod spec asks for it through
// PODRUNNER_TEST_SIDECAR, plays the test's sidecar container.
func TestMain(m *testing.M) {
	if os.Getenv("PODRUNNER_TEST_SIDECAR") == "1" {
		sidecar()
		return
	}
	testbin.Main(m)
}

// sidecar is the trivial sidecar of the tests. It writes what it sees to
// the file $RECORD, one line each: its pod and address when it starts;
// whether the app ($APP_ADDR) still accepts connections when the preStop
// hook reaches it (GET /prestop on $LISTEN) and when SIGTERM does; "exit"
// when it stops, unless $IGNORE_TERM is set. With $START_DELAY it waits
// that long before listening; with $CHECK_AT_START its first line says
// whether $APP_ADDR accepted a connection when it started.
func sidecar() {
	f, err := os.OpenFile(os.Getenv("RECORD"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sidecar:", err)
		os.Exit(1)
	}
	record := func(format string, args ...any) { fmt.Fprintf(f, format+"\n", args...) }
	app := func() string {
		conn, err := net.DialTimeout("tcp", os.Getenv("APP_ADDR"), time.Second)
		if err != nil {
			return "down"
		}
		conn.Close()
		return "up"
	}
	terms := make(chan os.Signal, 1)
	signal.Notify(terms, syscall.SIGTERM)
	if d, err := time.ParseDuration(os.Getenv("START_DELAY")); err == nil {
		time.Sleep(d) // a slow start, for the startup probe
	}
	ln, err := net.Listen("tcp", os.Getenv("LISTEN"))
	if err != nil {
		record("listen: %v", err)
		os.Exit(1)
	}
	if os.Getenv("CHECK_AT_START") != "" {
		record("start app=%s", app())
	} else {
		record("start pod=%s ip=%s node=%s", os.Getenv("POD_NAME"), os.Getenv("POD_IP"), os.Getenv("NODE_NAME"))
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ready", func(http.ResponseWriter, *http.Request) {})
	mux.HandleFunc("GET /prestop", func(http.ResponseWriter, *http.Request) { record("prestop app=%s", app()) })
	go http.Serve(ln, mux) //nolint:errcheck // ends with the process
	for range terms {
		record("sigterm app=%s", app())
		if os.Getenv("IGNORE_TERM") == "" {
			record("exit")
			f.Close()
			os.Exit(0)
		}
	}
}
