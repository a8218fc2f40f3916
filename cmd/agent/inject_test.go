package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestInjectCommand(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pod := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    outrider.io/inject: \"true\"\nspec:\n  containers:\n    - name: app\n      image: app:1\n"
	plain := "kind: ConfigMap\nmetadata: {name: c}\n"
	good, bad, other := write("pod.yaml", pod), write("bad.yaml", "kind: Pod\nmetadata: [\n"), write("plain.yaml", plain)
	// Files whose last line has no newline.
	svc := write("service.yaml", "kind: Service\nmetadata: {name: s}\nspec:\n  ports:\n  - port: 80")
	dashed := write("dashed.yaml", "---\nkind: ConfigMap\nmetadata: {name: d}")
	hostNet := write("hostnet.yaml", strings.Replace(pod, "spec:\n", "spec:\n  hostNetwork: true\n", 1))
	for _, tc := range []struct {
		name      string
		args      []string
		stdin     string
		code      int
		stdout    []string // substrings
		stderr    string   // substring
		sameAsIn  bool
		docs      []string // kind/name of each document, stdout parsed as a YAML stream
		stderrNot string   // substring stderr must not have
	}{
		{name: "file", args: []string{"--admin-token", "tok", good}, code: exitOK,
			stdout: []string{"initContainers:", "name: outrider", "Bearer tok", "shareProcessNamespace: true"}, stderr: "Pod p injected"},
		{name: "two files are one stream", args: []string{"--admin-token", "tok", good, other}, code: exitOK,
			stdout: []string{"name: outrider", "---\n" + plain}},
		{name: "a file without its final newline", args: []string{svc, good}, code: exitOK,
			docs: []string{"Service/s", "Pod/p"}},
		{name: "a file without its final newline, then one that starts with ---", args: []string{svc, dashed, other}, code: exitOK,
			docs: []string{"Service/s", "ConfigMap/d", "ConfigMap/c"}},
		{name: "hostNetwork warns", args: []string{hostNet}, code: exitOK, stdout: []string{"name: outrider"},
			stderr: "hostnet.yaml: Pod p: warning: hostNetwork: the sidecar's ports 15000, 15001 and 15090 are the node's"},
		{name: "no annotation passes through", args: []string{other}, code: exitOK, sameAsIn: true,
			stderr: "ConfigMap c unchanged"},
		{name: "stdin", args: []string{"--admin-token", "tok"}, stdin: pod, code: exitOK, stdout: []string{"name: outrider"}, stderr: "stdin: Pod p injected"},
		{name: "bad YAML", args: []string{bad}, code: exitUsage,
			stderr: "outrider inject: " + bad + ": document 1: bad input: yaml: line 2: did not find expected node content"},
		{name: "bad YAML in a second file names its own line", args: []string{other, bad}, code: exitUsage,
			stderr: "outrider inject: " + bad + ": document 1: bad input: yaml: line 2: did not find expected node content"},
		// Piped into kubectl apply, the good file's objects would be applied
		// without the others: nothing is written, nor reported injected.
		{name: "a file in error writes nothing of the others", args: []string{good, bad, other}, code: exitUsage,
			stderr: bad + ": document 1: bad input", stderrNot: "injected"},
		{name: "every file's error is named", args: []string{bad, good, filepath.Join(dir, "nope.yaml")}, code: exitUsage,
			stderr: bad + ": document 1: bad input: yaml: line 2: did not find expected node content\n" +
				"outrider inject: read " + filepath.Join(dir, "nope.yaml") + ": open " + filepath.Join(dir, "nope.yaml") + ": no such file or directory\n" +
				"outrider inject: nothing written"},
		{name: "missing file", args: []string{filepath.Join(dir, "nope.yaml")}, code: exitUsage, stderr: "nope.yaml: no such file or directory"},
		{name: "unknown flag", args: []string{"--nope"}, code: exitUsage, stderr: "flag provided but not defined: -nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := injectCmd(tc.args, strings.NewReader(tc.stdin), &stdout, &stderr)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, tc.code, stderr.String())
			}
			for _, s := range tc.stdout {
				if !strings.Contains(stdout.String(), s) {
					t.Errorf("stdout lacks %q:\n%s", s, stdout.String())
				}
			}
			if tc.docs != nil {
				if got := streamDocs(t, stdout.String()); !slices.Equal(got, tc.docs) {
					t.Errorf("stdout has documents %v, want %v:\n%s", got, tc.docs, stdout.String())
				}
			}
			if tc.sameAsIn && stdout.String() != plain {
				t.Errorf("stdout %q, want the input unchanged", stdout.String())
			}
			if !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("stderr %q, want it to contain %q", stderr.String(), tc.stderr)
			}
			if tc.stderrNot != "" && strings.Contains(stderr.String(), tc.stderrNot) {
				t.Errorf("stderr %q, want it without %q", stderr.String(), tc.stderrNot)
			}
			if tc.code != exitOK && stdout.Len() > 0 {
				t.Errorf("wrote %q to stdout despite the error, want nothing", stdout.String())
			}
		})
	}
}

// streamDocs is kind/name of each document of the YAML stream text.
func streamDocs(t *testing.T, text string) []string {
	t.Helper()
	var docs []string
	dec := yaml.NewDecoder(strings.NewReader(text))
	for {
		var obj struct {
			Kind     string
			Metadata struct{ Name string }
		}
		err := dec.Decode(&obj)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("stdout is not a YAML stream: %v\n%s", err, text)
		}
		docs = append(docs, obj.Kind+"/"+obj.Metadata.Name)
	}
}

// The dispatcher knows the command.
func TestDispatchInject(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := dispatch([]string{"inject", "--help"}, func(string) string { return "" }, &stdout, &stderr); code != exitOK {
		t.Fatalf("outrider inject --help: exit %d, stderr %s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "usage: outrider inject") {
		t.Errorf("help text %q", stderr.String())
	}
}
