package main

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// TestTokenFileFollowsTheFile: each read takes what the file holds now;
// an empty or missing file keeps the last token; only a new token calls
// changed.
func TestTokenFileFollowsTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	changes := 0
	f := &tokenFile{path: path, log: slog.New(slog.NewTextHandler(io.Discard, nil)), changed: func() { changes++ }}
	for _, step := range []struct {
		name        string
		content     *string // nil removes the file
		want        string
		wantChanges int
	}{
		{name: "first token", content: ptr("a\n"), want: "a"},
		{name: "same token", content: ptr("a"), want: "a"},
		{name: "rotated", content: ptr("b\n"), want: "b", wantChanges: 1},
		{name: "emptied by a writer", content: ptr(""), want: "b", wantChanges: 1},
		{name: "removed", content: nil, want: "b", wantChanges: 1},
		{name: "back, rotated again", content: ptr(" c \n"), want: "c", wantChanges: 2},
	} {
		if step.content == nil {
			os.Remove(path)
		} else if err := os.WriteFile(path, []byte(*step.content), 0o600); err != nil {
			t.Fatal(err)
		}
		if got := f.current(); got != step.want || changes != step.wantChanges {
			t.Errorf("%s: token %q, %d changes; want %q, %d", step.name, got, changes, step.want, step.wantChanges)
		}
	}
}

func ptr(s string) *string { return &s }
