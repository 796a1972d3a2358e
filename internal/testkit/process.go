package testkit

import (
	"context"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/topcdn/topcdn/internal/proc"
)

const (
	// startTimeout bounds WaitLine.
	startTimeout = 30 * time.Second
	// stopGrace is how long a process has to exit after SIGTERM when
	// it is stopped.
	stopGrace = 15 * time.Second
)

// Process is a child process of a test. It is stopped when the test that
// started it ends, after that test's subtests; so a process that later
// steps of a test use must be started by the test itself, not by a step.
type Process struct {
	*proc.Process
}

// Start starts bin with args, as StartCmd does.
func Start(t testing.TB, bin string, args ...string) *Process {
	t.Helper()
	return StartCmd(t, exec.Command(bin, args...))
}

// StartCmd starts cmd, with its output kept for Tail and failure
// messages. When t ends the process is stopped, and an unclean exit then
// fails t.
func StartCmd(t testing.TB, cmd *exec.Cmd) *Process {
	t.Helper()
	p, err := proc.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	tp := &Process{p}
	t.Cleanup(func() { tp.Stop(t) })
	return tp
}

// WaitLine waits up to 30 s for the process to print a line that starts
// with prefix, and returns the rest of the line. If the process exits or
// the time passes first, WaitLine fails t with the process's last lines.
func (p *Process) WaitLine(t testing.TB, prefix string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	rest, err := p.Process.WaitLine(ctx, prefix)
	if err != nil {
		t.Fatal(err)
	}
	return rest
}

// WaitUntil runs ready until it returns nil, and fails t with the
// process's last lines if the process exits or timeout passes first.
func (p *Process) WaitUntil(t testing.TB, timeout time.Duration, what string, ready func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := p.Process.WaitUntil(ctx, what, ready); err != nil {
		t.Fatal(err)
	}
}

// Stop sends SIGTERM, kills the process if it has not exited 15 s later,
// and fails t unless it exited cleanly. Stopping a process again, or one
// that was killed or waited for, does nothing.
func (p *Process) Stop(t testing.TB) {
	t.Helper()
	if err := p.Process.Stop(stopGrace); err != nil {
		t.Error(err)
	}
}

// binary is the topcdn binary BuildBinary builds, once per test binary,
// in a directory Main removes, and the tools BuildTool builds beside it.
// It is package state because building takes tens of seconds and every
// end-to-end test of a package needs it.
var binary struct {
	once      sync.Once
	dir, path string
	err       error
	out       []byte
	main      bool // Main runs the tests

	dirOnce sync.Once
	dirErr  error
	toolsMu sync.Mutex
	tools   map[string]*tool // by package
}

// tool is a program BuildTool builds.
type tool struct {
	once sync.Once
	path string
	err  error
	out  []byte
}

// Main runs m's tests and then removes the binary BuildBinary built, and
// returns the exit code. A package whose tests call BuildBinary calls it
// from its TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(testkit.Main(m)) }
func Main(m *testing.M) int {
	binary.main = true
	code := m.Run()
	if binary.dir != "" {
		os.RemoveAll(binary.dir)
	}
	return code
}

// buildDir returns the directory the binaries are built into, made the
// first time.
func buildDir(t testing.TB) string {
	t.Helper()
	if !binary.main {
		t.Fatal("testkit.BuildBinary and BuildTool need func TestMain(m *testing.M) { os.Exit(testkit.Main(m)) }")
	}
	binary.dirOnce.Do(func() { binary.dir, binary.dirErr = os.MkdirTemp("", "topcdn-testkit-") })
	if binary.dirErr != nil {
		t.Fatal(binary.dirErr)
	}
	return binary.dir
}

// BuildBinary builds ./cmd/topcdn the first time it is called in a test
// binary and returns the path of the binary. It needs Main.
func BuildBinary(t testing.TB) string {
	t.Helper()
	dir := buildDir(t)
	binary.once.Do(func() {
		binary.path = filepath.Join(dir, "topcdn")
		binary.out, binary.err = exec.Command("go", "build", "-o", binary.path, "github.com/topcdn/topcdn/cmd/topcdn").CombinedOutput()
	})
	if binary.err != nil {
		t.Fatalf("go build: %v\n%s", binary.err, binary.out)
	}
	return binary.path
}

// BuildTool builds the program pkg, a main package at the version go.mod
// pins (a tool line, e.g. github.com/letsencrypt/pebble/v2/cmd/pebble),
// the first time it is called for pkg in a test binary, and returns its
// path: beside BuildBinary's binary, under its package's last element,
// where topcdn finds it (the devnet its CA, pebble). It needs Main.
func BuildTool(t testing.TB, pkg string) string {
	t.Helper()
	dir := buildDir(t)
	binary.toolsMu.Lock()
	if binary.tools == nil {
		binary.tools = map[string]*tool{}
	}
	tl := binary.tools[pkg]
	if tl == nil {
		tl = &tool{path: filepath.Join(dir, path.Base(pkg))}
		binary.tools[pkg] = tl
	}
	binary.toolsMu.Unlock()
	tl.once.Do(func() {
		tl.out, tl.err = exec.Command("go", "build", "-o", tl.path, pkg).CombinedOutput()
	})
	if tl.err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, tl.err, tl.out)
	}
	return tl.path
}
