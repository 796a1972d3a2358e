package buildinfo

import (
	"runtime"
	"strings"
	"testing"
)

func TestGet(t *testing.T) {
	i := Get()
	if i.GoVersion != runtime.Version() || i.Version == "" || i.Revision == "" {
		t.Fatalf("build info %+v", i)
	}
	if s := i.String(); !strings.HasPrefix(s, i.Version+" (") || !strings.Contains(s, i.GoVersion) {
		t.Fatalf("String() = %q", s)
	}
}
