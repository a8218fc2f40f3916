package main

import (
	"testing"

	"github.com/outrider-sidecar/outrider/bench/internal/relaytest"
)

func TestLoopRelays(t *testing.T) { relaytest.CheckRaw(t, 0, startLoop) }
