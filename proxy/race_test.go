//go:build race

package proxy

// raceEnabled: the race detector drops pooled buffers on purpose, so
// allocation figures are larger under it.
const raceEnabled = true
