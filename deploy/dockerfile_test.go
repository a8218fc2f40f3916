package deploy_test

// No Docker engine runs where these tests run, so the Dockerfile is checked
// by parsing it with buildkit's own parser (the one `docker build` uses) and
// by running the build command it runs, `make outrider`.

import (
	"bytes"
	"debug/elf"
	"go/version"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	"golang.org/x/mod/modfile"
)

// root is the repository root, where the Dockerfile and the Makefile live.
const root = ".."

type dockerfile struct {
	stages []instructions.Stage
	args   map[string]string // global ARGs with their defaults
}

func parseDockerfile(t *testing.T) dockerfile {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := parser.Parse(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("parse Dockerfile: %v", err)
	}
	for _, w := range res.Warnings {
		t.Errorf("Dockerfile line %d: %s", w.Location.Start.Line, w.Short)
	}
	stages, metaArgs, err := instructions.Parse(res.AST, nil)
	if err != nil {
		t.Fatalf("parse Dockerfile instructions: %v", err)
	}
	d := dockerfile{stages: stages, args: map[string]string{}}
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			if kv.Value == nil {
				t.Fatalf("global ARG %s has no default: the base image would depend on the command line", kv.Key)
			}
			d.args[kv.Key] = *kv.Value
		}
	}
	return d
}

func (d dockerfile) expand(s string) string {
	return os.Expand(s, func(k string) string { return d.args[k] })
}

func (d dockerfile) stage(t *testing.T, name string) instructions.Stage {
	t.Helper()
	for _, s := range d.stages {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("Dockerfile has no stage %q", name)
	return instructions.Stage{}
}

var (
	digestRef  = regexp.MustCompile(`^[a-z0-9./_-]+(:[\w.-]+)?@sha256:[0-9a-f]{64}$`)
	versionRef = regexp.MustCompile(`^[a-z0-9./_-]+:v?[0-9]+\.[0-9]+(\.[0-9]+)?([\w.-]*)$`)
)

func TestDockerfileBaseImagesArePinned(t *testing.T) {
	d := parseDockerfile(t)
	seen := map[string]bool{}
	for _, s := range d.stages {
		base := d.expand(s.BaseName)
		switch {
		case seen[base]:
			// an earlier stage
		case digestRef.MatchString(base), versionRef.MatchString(base):
		default:
			t.Errorf("stage %q: base image %q is pinned neither by digest nor by version", s.Name, base)
		}
		seen[s.Name] = true
	}
}

// The builder's Go is the one go.mod declares, so the image is built with
// the toolchain the tests run with.
func TestDockerfileGoMatchesGoMod(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	mf, err := modfile.ParseLax("go.mod", raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := parseDockerfile(t)
	base := d.expand(d.stage(t, "build").BaseName)
	want := "golang:" + mf.Go.Version + "-"
	if !strings.HasPrefix(base, want) {
		t.Errorf("build stage FROM %s, want %s… (go.mod says go %s)", base, want, mf.Go.Version)
	}
}

// The Dockerfile builds with `make outrider`: the build flags are the
// Makefile's, written once.
func TestDockerfileBuildsWithTheMakefile(t *testing.T) {
	d := parseDockerfile(t)
	var runs []string
	for _, s := range d.stages {
		for _, c := range s.Commands {
			if r, ok := c.(*instructions.RunCommand); ok {
				runs = append(runs, strings.Join(r.CmdLine, " "))
			}
		}
	}
	joined := strings.Join(runs, "\n")
	if !regexp.MustCompile(`(^|&&\s*|\n)make outrider\b`).MatchString(joined) {
		t.Errorf("no RUN runs `make outrider`:\n%s", joined)
	}
	if strings.Contains(joined, "go build") || strings.Contains(joined, "-ldflags") || strings.Contains(joined, "-trimpath") {
		t.Errorf("a RUN has its own go build flags; they belong in the Makefile:\n%s", joined)
	}

	recipe := makeDryRun(t, "outrider", "BIN=/out", "VERSION=v9.9.9", "COMMIT=abc1234")
	for _, want := range []string{"CGO_ENABLED=0 ", " build ", " -trimpath ", "-s -w", "version.Version=v9.9.9", "version.Commit=abc1234", "-o /out/outrider ./cmd/agent"} {
		if !strings.Contains(recipe, want) {
			t.Errorf("make outrider runs %q, want it to contain %q", recipe, want)
		}
	}
	// What the Dockerfile copies is what the Makefile writes.
	copied := false
	for _, c := range d.stage(t, "outrider").Commands {
		if cp, ok := c.(*instructions.CopyCommand); ok && cp.From == "build" && slices.Equal(cp.SourcePaths, []string{"/src/bin/outrider"}) && cp.DestPath == "/outrider" {
			copied = true
		}
	}
	if !copied {
		t.Errorf("the outrider stage does not COPY --from=build /src/bin/outrider /outrider")
	}
}

func makeDryRun(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("make", append([]string{"-n", "-C", root}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make -n %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func TestDockerfileFinalStages(t *testing.T) {
	d := parseDockerfile(t)
	if last := d.stages[len(d.stages)-1]; last.Name != "outrider" {
		t.Errorf("the last (default) stage is %q, want outrider", last.Name)
	}
	for _, tc := range []struct {
		stage      string
		entrypoint []string
		labels     []string
	}{
		{stage: "outrider", entrypoint: []string{"/outrider"}, labels: []string{"title", "description", "source", "version", "revision"}},
		{stage: "echo", entrypoint: []string{"/echo"}, labels: []string{"title", "description", "source"}},
	} {
		t.Run(tc.stage, func(t *testing.T) {
			s := d.stage(t, tc.stage)
			if base := d.expand(s.BaseName); !strings.HasPrefix(base, "gcr.io/distroless/static-") && base != "scratch" {
				t.Errorf("stage %s runs on %s, want distroless static or scratch", tc.stage, base)
			}
			var user string
			var entry *instructions.EntrypointCommand
			labels := map[string]string{}
			for _, c := range s.Commands {
				switch c := c.(type) {
				case *instructions.UserCommand:
					user = c.User
				case *instructions.EntrypointCommand:
					entry = c
				case *instructions.LabelCommand:
					for _, kv := range c.Labels {
						labels[kv.Key] = kv.Value
					}
				case *instructions.RunCommand:
					t.Errorf("stage %s has a RUN (%v): the runtime image has no shell", tc.stage, c.CmdLine)
				}
			}
			uid, gid, ok := strings.Cut(user, ":")
			u, err := strconv.Atoi(uid)
			if err != nil || u == 0 {
				t.Errorf("stage %s USER %q, want a numeric non-root uid", tc.stage, user)
			}
			if g, err := strconv.Atoi(gid); ok && (err != nil || g == 0) {
				t.Errorf("stage %s USER %q, want a numeric non-root gid", tc.stage, user)
			}
			if entry == nil || entry.PrependShell || !slices.Equal(entry.CmdLine, tc.entrypoint) {
				t.Errorf("stage %s ENTRYPOINT %+v, want exec form %q", tc.stage, entry, tc.entrypoint)
			}
			for _, l := range tc.labels {
				if strings.Trim(labels["org.opencontainers.image."+l], `"`) == "" {
					t.Errorf("stage %s has no label org.opencontainers.image.%s", tc.stage, l)
				}
			}
		})
	}
}

func dockerignore(t *testing.T) *patternmatcher.PatternMatcher {
	t.Helper()
	f, err := os.Open(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		t.Fatalf(".dockerignore: %v", err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatalf(".dockerignore: %v", err)
	}
	return pm
}

func TestDockerignoreKeepsTheBuildInputs(t *testing.T) {
	pm := dockerignore(t)
	for _, tc := range []struct {
		path     string
		excluded bool
	}{
		{"go.mod", false},
		{"go.sum", false},
		{"Makefile", false},
		{"cmd/agent/main.go", false},
		{"examples/echo/main.go", false},
		{"internal/version/version.go", false},
		{".git", true},
		{"bin/outrider", true},
		{"bin/consul", true},
		{"deploy/k8s/base/deployment.yaml", true},
		{"cmd/agent/main_test.go", true},
	} {
		t.Run(tc.path, func(t *testing.T) {
			got, err := pm.MatchesOrParentMatches(tc.path)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.excluded {
				t.Errorf("%s excluded from the build context = %v, want %v", tc.path, got, tc.excluded)
			}
		})
	}
}

// TestBuildStageRuns runs the Dockerfile's build stage without an engine:
// the build context as .dockerignore leaves it (from the tracked files, as
// in a clean clone) is copied to a scratch directory standing for the
// stage's WORKDIR, and the stage's RUN lines run there with its ARGs, on
// this machine's Go instead of the golang image's. The files the final
// stages COPY --from=build must then exist, and outrider must be what
// distroless static can run: static, stripped, stamped with the version,
// small (the image goal is under 20 MB; distroless static adds about 2 MB).
func TestBuildStageRuns(t *testing.T) {
	d := parseDockerfile(t)
	build := d.stage(t, "build")
	context := contextFiles(t)
	work, workdir := t.TempDir(), ""
	args := map[string]string{"VERSION": "v0.0.0-test", "COMMIT": "0000000"}
	env := os.Environ()
	for _, c := range build.Commands {
		switch c := c.(type) {
		case *instructions.WorkdirCommand:
			workdir = c.Path
		case *instructions.ArgCommand:
			for _, kv := range c.Args {
				if _, ok := args[kv.Key]; !ok && kv.Value != nil {
					args[kv.Key] = *kv.Value
				}
			}
		case *instructions.CopyCommand:
			if c.From != "" {
				t.Fatalf("build stage: COPY --from=%s is not simulated", c.From)
			}
			for _, src := range c.SourcePaths {
				for _, f := range context {
					if src == "." || f == src {
						copyFile(t, filepath.Join(root, f), filepath.Join(work, f), 0o644)
					}
				}
			}
		case *instructions.RunCommand:
			if !c.PrependShell {
				t.Fatalf("build stage: exec-form RUN %v is not simulated", c.CmdLine)
			}
			cmd := exec.Command("sh", "-c", strings.Join(c.CmdLine, " "))
			cmd.Dir = work
			cmd.Env = env
			for k, v := range args {
				cmd.Env = append(cmd.Env, k+"="+v)
			}
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("build stage: RUN %s: %v\n%s", strings.Join(c.CmdLine, " "), err, out)
			}
		}
	}
	if workdir == "" {
		t.Fatal("build stage has no WORKDIR")
	}
	// What the final stages copy out of the build stage.
	for _, name := range []string{"outrider", "echo"} {
		for _, c := range d.stage(t, name).Commands {
			cp, ok := c.(*instructions.CopyCommand)
			if !ok || cp.From != "build" {
				continue
			}
			for _, src := range cp.SourcePaths {
				rel, err := filepath.Rel(workdir, src)
				if err != nil || strings.HasPrefix(rel, "..") {
					t.Fatalf("stage %s copies %s from outside the build stage's WORKDIR %s", name, src, workdir)
				}
				checkStatic(t, filepath.Join(work, rel))
			}
		}
	}
	v, err := exec.Command(filepath.Join(work, "bin", "outrider"), "version").CombinedOutput()
	if err != nil || !strings.Contains(string(v), "v0.0.0-test") || !strings.Contains(string(v), "0000000") {
		t.Errorf("outrider version = %q (%v), want the VERSION and COMMIT the build was given", v, err)
	}
	st, err := os.Stat(filepath.Join(work, "bin", "outrider"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("build stage: outrider is a %.1f MB static binary", float64(st.Size())/1e6)
	if st.Size() > 18e6 {
		t.Errorf("outrider is %d bytes; with distroless static (~2 MB) the image would pass 20 MB", st.Size())
	}
}

// contextFiles is the tracked files .dockerignore lets into the build
// context.
func contextFiles(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("git", "-C", root, "ls-files").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	pm := dockerignore(t)
	var files []string
	for _, f := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		excluded, err := pm.MatchesOrParentMatches(f)
		if err != nil {
			t.Fatal(err)
		}
		if st, err := os.Stat(filepath.Join(root, f)); !excluded && err == nil && st.Mode().IsRegular() {
			files = append(files, f)
		}
	}
	return files
}

// checkStatic fails unless path is a static ELF without a symbol table:
// distroless static has no libc and -s -w strips the symbols.
func checkStatic(t *testing.T, path string) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("%s: %v", filepath.Base(path), err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("%s is dynamically linked (%v): it would not start on distroless static", filepath.Base(path), p.Type)
		}
	}
	if filepath.Base(path) == "outrider" && f.Section(".symtab") != nil {
		t.Errorf("outrider has a symbol table: -s -w did not reach the linker")
	}
}

// This module's dependencies (kustomize, buildkit, k8s.io/api) must build
// with the Go that outrider's go.mod declares: `go mod tidy` raises the go
// directive when a newer dependency needs it.
func TestDeployModuleNeedsNoNewerGo(t *testing.T) {
	goOf := func(path string) string {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		mf, err := modfile.ParseLax(path, raw, nil)
		if err != nil || mf.Go == nil {
			t.Fatalf("%s: no go directive (%v)", path, err)
		}
		return "go" + mf.Go.Version
	}
	outrider, deploy := goOf(filepath.Join(root, "go.mod")), goOf("go.mod")
	if version.Compare(deploy, outrider) > 0 {
		t.Errorf("deploy/go.mod needs %s, newer than outrider's %s: pin the dependency that raised it", deploy, outrider)
	}
}
