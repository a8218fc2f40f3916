package main

import (
	"io"
	"log/slog"

	"github.com/outrider-sidecar/outrider/config"
)

// newLogger builds the slog logger that OUTRIDER_LOG_FORMAT and
// OUTRIDER_LOG_LEVEL ask for. config has validated both.
func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
