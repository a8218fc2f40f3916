package main

import (
	"testing"

	"github.com/outrider-sidecar/outrider/internal/testbin"
)

// TestMain builds bin/outrider and the sample app once for the end-to-end
// tests of this package, which start them as processes.
func TestMain(m *testing.M) { testbin.Main(m) }
