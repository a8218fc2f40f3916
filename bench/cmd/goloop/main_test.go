package main

import (
	"syscall"
	"testing"

	"github.com/outrider-sidecar/outrider/bench/internal/relaytest"
)

func TestLoopRelays(t *testing.T) { relaytest.CheckRaw(t, syscall.SOCK_NONBLOCK, startLoop) }
