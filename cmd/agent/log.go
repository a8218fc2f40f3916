package main

import (
	"io"
	"log/slog"

	"github.com/outrider-sidecar/outrider/config"
)

// newLogger builds the slog logger that OUTRIDER_LOG_FORMAT and
// OUTRIDER_LOG_LEVEL ask for, at the level held by level, which it sets
// (a reload may change it). config has validated both.
func newLogger(c config.Log, level *slog.LevelVar, w io.Writer) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(c.Level))
	level.Set(l)
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	opts.ReplaceAttr = durationText
	return slog.New(slog.NewJSONHandler(w, opts))
}

// durationText writes a duration as the text handler and outrider's
// variables do ("5s"), where the JSON handler would write nanoseconds
// (5000000000).
func durationText(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}
