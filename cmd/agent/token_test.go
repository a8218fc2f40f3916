package main

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/outrider-sidecar/outrider/internal/testlog"
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

// TestTokenFileEmptyBeforeAnyToken: a file that is empty before it ever
// held a token (a secret not rendered yet) is logged once, as requests
// then go as Consul's anonymous token, which Consul's "lacks permission"
// does not tell; a file a writer empties afterwards is not.
func TestTokenFileEmptyBeforeAnyToken(t *testing.T) {
	const msg = "CONSUL_HTTP_TOKEN_FILE is empty"
	path := filepath.Join(t.TempDir(), "token")
	logs := &testlog.Buffer{}
	f := &tokenFile{path: path, log: slog.New(slog.NewTextHandler(logs, nil))}
	for _, step := range []struct {
		name    string
		content string
		want    string
		logged  int // times the empty file was logged so far
	}{
		{name: "empty at start", content: "", want: "", logged: 1},
		{name: "still empty", content: "\n", want: "", logged: 1},
		{name: "rendered", content: "a\n", want: "a", logged: 1},
		{name: "emptied by a writer", content: "", want: "a", logged: 1},
	} {
		if err := os.WriteFile(path, []byte(step.content), 0o600); err != nil {
			t.Fatal(err)
		}
		if got := f.current(); got != step.want || logs.Count(msg) != step.logged {
			t.Errorf("%s: token %q, empty file logged %d times; want %q, %d:\n%s", step.name, got, logs.Count(msg), step.want, step.logged, logs)
		}
	}
}
