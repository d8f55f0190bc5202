// Package buildinfo is the one source of the binary's version: what
// `switchboard version` prints, /healthz and the cluster status report per
// node, the dashboard shows and the host agent sends as its User-Agent.
//
// A release build sets the version, commit and date with the linker:
//
//	go build -ldflags "-X github.com/switchboard-hub/switchboard/internal/buildinfo.version=v1.2.0 \
//	    -X github.com/switchboard-hub/switchboard/internal/buildinfo.commit=$(git rev-parse HEAD) \
//	    -X github.com/switchboard-hub/switchboard/internal/buildinfo.date=$(date -u +%Y-%m-%dT%H:%M:%SZ)" ./cmd/switchboard
//
// Without them the values come from the Go toolchain's build information:
// the module version of `go install …/cmd/switchboard@v1.2.0`, the VCS
// revision and commit time of a build inside a git checkout (with
// "+dirty" for uncommitted changes), else "dev" and "unknown".
package buildinfo

import (
	"runtime"
	"runtime/debug"
	"sync"
)

// Set by the linker in release builds (-ldflags -X, see the package doc).
// Empty: taken from the build information.
var (
	version string
	commit  string
	date    string
)

// Unknown is the commit or date of a build that records neither.
const Unknown = "unknown"

// DevVersion is the version of a build that is not a tagged module
// version (go build or go run in a checkout, tests).
const DevVersion = "dev"

// Info describes the running binary.
type Info struct {
	// Version is the release ("v1.2.0"), or DevVersion.
	Version string `json:"version"`
	// Commit is the VCS revision, with "+dirty" when the tree had
	// uncommitted changes; Unknown if not recorded.
	Commit string `json:"commit"`
	// Date is the build's (or, without -ldflags, the commit's) time in
	// RFC 3339; Unknown if not recorded.
	Date string `json:"date"`
	// GoVersion is the toolchain that built the binary ("go1.26.0").
	GoVersion string `json:"go_version"`
}

var (
	once sync.Once
	info Info
)

// Get returns the binary's build information. It is computed once.
func Get() Info {
	once.Do(func() {
		bi, _ := debug.ReadBuildInfo()
		info = fromBuildInfo(bi, version, commit, date)
	})
	return info
}

// Version is Get().Version.
func Version() string { return Get().Version }

// fromBuildInfo combines the linker's values (which win when set) with the
// toolchain's build information (bi may be nil).
func fromBuildInfo(bi *debug.BuildInfo, ldVersion, ldCommit, ldDate string) Info {
	in := Info{Version: DevVersion, Commit: Unknown, Date: Unknown, GoVersion: runtime.Version()}
	if bi != nil {
		if bi.GoVersion != "" {
			in.GoVersion = bi.GoVersion
		}
		// "(devel)" is a build in a checkout; a pseudo-version or tag
		// comes from go install module@version.
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			in.Version = v
		}
		var revision, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				revision = s.Value
			case "vcs.time":
				in.Date = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
		if revision != "" {
			in.Commit = revision
			if modified == "true" {
				in.Commit += "+dirty"
			}
		}
	}
	if ldVersion != "" {
		in.Version = ldVersion
	}
	if ldCommit != "" {
		in.Commit = ldCommit
	}
	if ldDate != "" {
		in.Date = ldDate
	}
	return in
}
