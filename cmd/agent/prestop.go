package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/outrider-sidecar/outrider/config"
	"github.com/outrider-sidecar/outrider/shutdown"
)

// prestop implements `outrider prestop`: it asks the agent running beside
// it to drain, through its admin listener, and waits for the end. Exit 0
// when everything in flight finished; 1 with the reason otherwise.
func prestop(getenv func(string) string, stdout, stderr io.Writer) int {
	// systemd runs ExecStop= after the main process has exited on its own
	// too (a refused configuration, a crash), and then sets EXIT_CODE:
	// there is no agent left to drain, and failing to reach its admin
	// listener would point the reader of the journal at the wrong fault.
	if code := getenv("EXIT_CODE"); code != "" && getenv("SERVICE_RESULT") != "" {
		fmt.Fprintf(stderr, "outrider prestop: no drain: the agent had already exited (EXIT_CODE=%s, EXIT_STATUS=%s); its own log says why\n",
			code, getenv("EXIT_STATUS"))
		return exitOK
	}
	c, err := config.LoadPrestop(getenv)
	if err != nil {
		for _, e := range unjoin(err) {
			fmt.Fprintf(stderr, "outrider prestop: configuration: %v\n", e)
		}
		return exitUsage
	}
	req, err := http.NewRequest(http.MethodPost, c.URL, nil)
	if err != nil {
		fmt.Fprintf(stderr, "outrider prestop: %v\n", err)
		return exitUsage
	}
	if tok := c.Token.Reveal(); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	// No deadline on the answer: the agent answers when its drain is done,
	// after the timings in force there (a config file may have changed
	// them), and the platform bounds the hook (the pod's grace period,
	// systemd's TimeoutStopSec). Only the connection is bounded.
	client := &http.Client{Transport: &http.Transport{
		DialContext: (&net.Dialer{Timeout: prestopDialTimeout}).DialContext,
	}}
	resp, err := client.Do(req)
	if err != nil {
		var op *net.OpError
		switch {
		case errors.As(err, &op) && op.Op == "dial":
			fmt.Fprintf(stderr, "outrider prestop: no drain: cannot reach the agent's admin listener (OUTRIDER_ADMIN_LISTEN): %v\n", err)
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET):
			fmt.Fprintf(stderr, "outrider prestop: the agent closed the connection before its drain was done (it exited or was killed; its log says why): %v\n", err)
		default:
			// An answer that is not HTTP: another server listens there.
			fmt.Fprintf(stderr, "outrider prestop: no drain: what listens at OUTRIDER_ADMIN_LISTEN did not answer as outrider does (another server's address?): %v\n", err)
		}
		return exitFailed
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var rep shutdown.Report
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusInternalServerError || json.Unmarshal(body, &rep) != nil {
		fmt.Fprintf(stderr, "outrider prestop: no drain: %s answered %s: %s\n", c.URL, resp.Status, firstLine(body))
		return exitFailed
	}
	dereg := fmt.Sprintf("deregistered %v", rep.Deregistered)
	if rep.NothingToDeregister {
		dereg = "nothing to deregister (no registry, or consul never took the instance)"
	}
	fmt.Fprintf(stdout, "drained in %.1fs: %d requests finished, %d cut, %s\n",
		rep.DurationSeconds, rep.RequestsFinished, rep.RequestsCut, dereg)
	if !rep.OK() {
		fmt.Fprintf(stderr, "outrider prestop: the drain had problems: %s\n", rep.Error)
		return exitFailed
	}
	return exitOK
}

// prestopDialTimeout bounds the connection to the agent's admin listener.
const prestopDialTimeout = 5 * time.Second

func firstLine(b []byte) string {
	for i, c := range b {
		if c == '\n' {
			return string(b[:i])
		}
	}
	return string(b)
}
