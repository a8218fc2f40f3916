package testlog

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

func TestBufferConcurrentWrites(t *testing.T) {
	var b Buffer
	log := slog.New(slog.NewTextHandler(&b, nil))
	const writers, lines = 8, 100
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range lines {
				log.Info("line", "writer", w, "i", i)
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if got := b.Count("msg=line"); got != writers*lines {
		t.Errorf("Count(msg=line) = %d, want %d", got, writers*lines)
	}
	if got := strings.Count(b.String(), "\n"); got != writers*lines {
		t.Errorf("%d lines, want %d: writes were interleaved", got, writers*lines)
	}
}

func TestBufferCount(t *testing.T) {
	var b Buffer
	if got := b.Count("x"); got != 0 {
		t.Errorf("Count on an empty Buffer = %d, want 0", got)
	}
	fmt.Fprint(&b, "ab ab a")
	if got, want := b.String(), "ab ab a"; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
	if got := b.Count("ab"); got != 2 {
		t.Errorf("Count(ab) = %d, want 2", got)
	}
}
