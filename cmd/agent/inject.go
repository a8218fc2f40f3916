package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/outrider-sidecar/outrider/inject"
)

const injectUsage = `usage: outrider inject [--all] [--image IMAGE] [--admin-token TOKEN] [FILE...]

Adds outrider as a sidecar to the Kubernetes workloads in FILE (or stdin,
or "-") whose pod template has the annotation outrider.io/inject: "true",
and writes the YAML to stdout: all of it, or nothing if any file is in
error. Other documents pass through unchanged; injecting twice changes
nothing. Annotations: see docs/deploy.md.
`

// injectCmd runs `outrider inject`: exit 2 on bad flags or input, 1 when
// the output cannot be written.
func injectCmd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("inject", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, injectUsage); fs.PrintDefaults() }
	var opts inject.Options
	fs.BoolVar(&opts.All, "all", false, "inject every workload unless its annotation says \"false\"")
	fs.StringVar(&opts.Image, "image", "", "the sidecar's image, unless outrider.io/image names one (default: keep an earlier injection's, else "+inject.DefaultImage+")")
	fs.StringVar(&opts.AdminToken, "admin-token", "", "the admin listener's token (default: keep an earlier injection's, else a random one)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	files := fs.Args()
	if len(files) == 0 {
		files = []string{"-"}
	}
	// The output goes out once every file is injected: a file in error
	// writes nothing at all, so that `outrider inject a.yaml b.yaml |
	// kubectl apply -f -` applies none of a.yaml when b.yaml is wrong.
	// Every file is read and injected, so that one run names every
	// file's error.
	var out bytes.Buffer
	var report []string // what happened to each object, for stderr
	code := exitOK
	for _, f := range files {
		name, in, err := readInput(f, stdin)
		if err != nil {
			fmt.Fprintf(stderr, "outrider inject: %v\n", err)
			code = max(code, exitUsage)
			continue
		}
		var doc bytes.Buffer
		if b := out.Bytes(); len(b) > 0 && b[len(b)-1] != '\n' {
			// The previous file lacks its final newline; a "---" after it
			// would end its last line instead of starting a document.
			doc.WriteString("\n")
		}
		if out.Len() > 0 && !bytes.HasPrefix(in, []byte("---")) {
			// One stream out of several files: each starts a new document.
			// Written out, not put before the input, so that the file's
			// errors name its own line numbers.
			doc.WriteString("---\n")
		}
		results, err := inject.Stream(name, in, &doc, opts)
		if err != nil {
			fmt.Fprintf(stderr, "outrider inject: %v\n", err)
			if errors.Is(err, inject.ErrBadInput) {
				code = max(code, exitUsage)
			} else {
				code = max(code, exitFailed)
			}
			continue
		}
		out.Write(doc.Bytes())
		for _, r := range results {
			if r.Injected {
				report = append(report, fmt.Sprintf("%s: %s %s injected", name, r.Kind, r.Name))
				for _, w := range r.Warnings {
					report = append(report, fmt.Sprintf("%s: %s %s: warning: %s", name, r.Kind, r.Name, w))
				}
			} else {
				report = append(report, fmt.Sprintf("%s: %s %s unchanged (%s)", name, r.Kind, r.Name, r.Reason))
			}
		}
	}
	if code != exitOK {
		fmt.Fprintln(stderr, "outrider inject: nothing written: fix the errors above and run it again")
		return code
	}
	for _, line := range report {
		fmt.Fprintf(stderr, "outrider inject: %s\n", line)
	}
	if _, err := stdout.Write(out.Bytes()); err != nil {
		fmt.Fprintf(stderr, "outrider inject: write the output: %v\n", err)
		return exitFailed
	}
	return exitOK
}

func readInput(file string, stdin io.Reader) (string, []byte, error) {
	if file == "-" {
		b, err := io.ReadAll(stdin)
		if err != nil {
			return "stdin", nil, fmt.Errorf("read stdin: %w", err)
		}
		return "stdin", b, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return file, nil, fmt.Errorf("read %s: %w", file, err)
	}
	return file, b, nil
}
