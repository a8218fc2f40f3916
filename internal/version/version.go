// Package version holds the build's identity, set at link time:
//
//	go build -ldflags "-X github.com/outrider-sidecar/outrider/internal/version.Version=v0.1.0 \
//	  -X github.com/outrider-sidecar/outrider/internal/version.Commit=$(git rev-parse --short HEAD)"
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is the release version; "dev" for a build from a work tree.
var Version = "dev"

// Commit is the revision the binary was built from, when known.
var Commit = ""

// Revision returns Commit, or the VCS revision Go stamped into the binary.
func Revision() string {
	if Commit != "" {
		return Commit
	}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return s.Value[:12]
			}
		}
	}
	return "unknown"
}

// UserAgent is the User-Agent outrider sends to the app and to Consul.
func UserAgent() string { return "outrider/" + Version }

// String describes the build in one line, as `outrider version` prints it.
func String() string {
	return fmt.Sprintf("outrider %s (commit %s, %s, %s/%s)", Version, Revision(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
