// Package buildinfo says which build of topcdn is running: the module
// version, the VCS revision and time it was built from, and the Go
// version, as the Go toolchain stamped them into the binary.
package buildinfo

import (
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
)

// Info is what the binary knows of its build.
type Info struct {
	// Version is the main module's version ("(devel)" for a build from
	// a checkout).
	Version string
	// Revision is the VCS revision built from, with "-dirty" when the
	// tree had changes; "unknown" when not stamped (go run, tests).
	Revision string
	// Time is the revision's commit time (RFC 3339), or "".
	Time string
	// GoVersion is the Go toolchain's version.
	GoVersion string
}

// Get returns the running binary's build information.
var Get = sync.OnceValue(func() Info {
	info := Info{Version: "(devel)", Revision: "unknown", GoVersion: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return info
	}
	if v := bi.Main.Version; v != "" {
		info.Version = v
	}
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Revision = s.Value
		case "vcs.time":
			info.Time = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if dirty && info.Revision != "unknown" {
		info.Revision += "-dirty"
	}
	return info
})

// String formats the build as one line: "VERSION (REVISION, TIME, GO)".
func (i Info) String() string {
	parts := []string{i.Revision}
	if i.Time != "" {
		parts = append(parts, i.Time)
	}
	parts = append(parts, i.GoVersion)
	return i.Version + " (" + strings.Join(parts, ", ") + ")"
}
