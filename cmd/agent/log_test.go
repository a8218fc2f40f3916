package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/outrider-sidecar/outrider/config"
)

// TestLogDurations: a duration reads as in outrider's variables ("5s") in
// either log format, as the drain's and the app stop's lines log them.
func TestLogDurations(t *testing.T) {
	for _, tc := range []struct{ format, want string }{
		{"json", `"delay":"5s","timeout":"1m30s"`},
		{"text", `delay=5s timeout=1m30s`},
	} {
		t.Run(tc.format, func(t *testing.T) {
			var buf bytes.Buffer
			log := newLogger(config.Log{Format: tc.format, Level: "info"}, new(slog.LevelVar), &buf)
			log.Info("drain started", "delay", 5*time.Second, "timeout", 90*time.Second)
			if !strings.Contains(buf.String(), tc.want) {
				t.Errorf("log line %q, want it to hold %s", buf.String(), tc.want)
			}
		})
	}
}
