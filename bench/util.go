package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
)

// cacheDir returns the directory where the harness caches expensive
// artifacts (the kubo binary, generated datasets): $TOPCDN_BENCH_CACHE if
// set, else $XDG_CACHE_HOME/topcdn, else ~/.cache/topcdn. The directory is
// created if needed.
func cacheDir() (string, error) {
	dir := os.Getenv("TOPCDN_BENCH_CACHE")
	if dir == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", fmt.Errorf("locating cache dir: %w", err)
			}
			base = filepath.Join(home, ".cache")
		}
		dir = filepath.Join(base, "topcdn")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("creating cache dir: %w", err)
	}
	return dir, nil
}

// runResult is the outcome of one timed command execution.
type runResult struct {
	// Wall is the elapsed wall-clock time from start to exit.
	Wall time.Duration
	// CPU is the user plus system CPU time consumed by the process.
	CPU time.Duration
	// Stdout is everything the process wrote to standard output.
	Stdout string
}

// runTimed runs name with args, bounded by timeout, and measures its wall
// and CPU time. env is appended to the current environment. A non-zero exit
// is an error that includes the tail of the command's stderr.
func runTimed(ctx context.Context, timeout time.Duration, env []string, name string, args ...string) (runResult, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second

	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("timed out after %v: %w", timeout, err)
		}
		return runResult{}, fmt.Errorf("running %s: %w%s", shellQuote(name, args...), err, tailOf(stderr.String()))
	}
	ps := cmd.ProcessState
	return runResult{
		Wall:   wall,
		CPU:    ps.UserTime() + ps.SystemTime(),
		Stdout: stdout.String(),
	}, nil
}

// tailOf formats the last few lines of command output for inclusion in an
// error message, or returns "" if out is blank.
func tailOf(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) == 1 && lines[0] == "" {
		return ""
	}
	const keep = 15
	if len(lines) > keep {
		lines = lines[len(lines)-keep:]
	}
	return "\n\t" + strings.Join(lines, "\n\t")
}

// shellQuote renders a command line for messages.
func shellQuote(name string, args ...string) string {
	parts := make([]string, 0, 1+len(args))
	for _, s := range append([]string{name}, args...) {
		if s == "" || strings.ContainsAny(s, " \t\n'\"\\$") {
			s = "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

// lineWriter is an io.Writer that forwards complete lines to an underlying
// writer with a prefix and remembers the most recent ones. It is safe for
// concurrent use.
type lineWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix func() string
	buf    []byte
	tail   []string
}

// newLineWriter returns a lineWriter writing to w; prefix is evaluated for
// every line (so it may include e.g. elapsed time).
func newLineWriter(w io.Writer, prefix func() string) *lineWriter {
	return &lineWriter{w: w, prefix: prefix}
}

// Write implements io.Writer. It never fails: output problems on the
// progress stream must not abort the command being watched.
func (lw *lineWriter) Write(p []byte) (int, error) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	lw.buf = append(lw.buf, p...)
	for {
		i := bytes.IndexByte(lw.buf, '\n')
		if i < 0 {
			break
		}
		lw.emitLocked(string(lw.buf[:i]))
		lw.buf = lw.buf[i+1:]
	}
	return len(p), nil
}

// Println writes one line as if the command had printed it.
func (lw *lineWriter) Println(line string) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	lw.emitLocked(line)
}

// Flush emits any buffered partial line.
func (lw *lineWriter) Flush() {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if len(lw.buf) > 0 {
		lw.emitLocked(string(lw.buf))
		lw.buf = nil
	}
}

// Tail returns the last lines written, formatted for an error message.
func (lw *lineWriter) Tail() string {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return tailOf(strings.Join(lw.tail, "\n"))
}

func (lw *lineWriter) emitLocked(line string) {
	fmt.Fprintf(lw.w, "%s%s\n", lw.prefix(), line)
	const keep = 15
	lw.tail = append(lw.tail, line)
	if len(lw.tail) > keep {
		lw.tail = slices.Delete(lw.tail, 0, len(lw.tail)-keep)
	}
}

// streamCmd runs name with args in dir, sending its combined stdout and
// stderr to lw line by line. env is appended to the current environment. On
// failure the error includes the last output lines.
func streamCmd(ctx context.Context, lw *lineWriter, dir string, env []string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = lw
	cmd.Stderr = lw
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	lw.Flush()
	if err != nil {
		return fmt.Errorf("running %s (in %s): %w%s", shellQuote(name, args...), dir, err, lw.Tail())
	}
	return nil
}

// goOutput runs the go command with args in dir and returns its trimmed
// stdout.
func goOutput(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("running %s: %w%s", shellQuote("go", args...), err, tailOf(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

// moduleRoot returns the root directory of the main module containing the
// current directory (the topcdn repository when run as documented).
func moduleRoot(ctx context.Context) (string, error) {
	gomod, err := goOutput(ctx, "", "env", "GOMOD")
	if err != nil {
		return "", fmt.Errorf("locating module root: %w", err)
	}
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("locating module root: not inside a Go module; run from the topcdn repository root")
	}
	return filepath.Dir(gomod), nil
}

// buildTopcdn compiles ./cmd/topcdn of the current module into outDir and
// returns the binary's path.
func buildTopcdn(ctx context.Context, outDir string) (string, error) {
	return goBuild(ctx, outDir, "topcdn", "./cmd/topcdn")
}

// goBuild builds the module's package pkg into outDir/name, showing the
// build's output, and returns the binary's path.
func goBuild(ctx context.Context, outDir, name, pkg string) (string, error) {
	root, err := moduleRoot(ctx)
	if err != nil {
		return "", err
	}
	bin := filepath.Join(outDir, name)
	fmt.Fprintf(os.Stderr, "building %s (%s) from %s ...\n", name, pkg, root)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	lw := newLineWriter(os.Stderr, func() string { return "  go build: " })
	if err := streamCmd(ctx, lw, root, nil, "go", "build", "-o", bin, pkg); err != nil {
		return "", fmt.Errorf("building %s: %w", name, err)
	}
	return bin, nil
}

// machineInfo describes the host a benchmark ran on.
type machineInfo struct {
	// NumCPU is the number of logical CPUs usable by this process.
	NumCPU int `json:"num_cpu"`
	// CPUModel is the processor model name, if known.
	CPUModel string `json:"cpu_model,omitempty"`
	// OS and Arch are runtime.GOOS and runtime.GOARCH.
	OS   string `json:"os"`
	Arch string `json:"arch"`
	// GoVersion is the Go toolchain version that built the harness (and,
	// via the same `go` command, topcdn).
	GoVersion string `json:"go_version"`
	// Commit is the topcdn git commit being benchmarked, with a "-dirty"
	// suffix if the work tree has changes; empty if unknown.
	Commit string `json:"commit,omitempty"`
}

// collectMachineInfo gathers machineInfo on a best-effort basis: fields that
// cannot be determined are left empty.
func collectMachineInfo(ctx context.Context) machineInfo {
	return machineInfo{
		NumCPU:    runtime.NumCPU(),
		CPUModel:  cpuModel(),
		OS:        runtime.GOOS,
		Arch:      runtime.GOARCH,
		GoVersion: runtime.Version(),
		Commit:    gitCommit(ctx),
	}
}

// cpuModel returns the first "model name" from /proc/cpuinfo, or "".
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// gitCommit returns the short HEAD commit of the current repository, with
// "-dirty" appended if there are uncommitted changes, or "" if unknown.
func gitCommit(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	commit := strings.TrimSpace(string(out))
	status, err := exec.CommandContext(ctx, "git", "status", "--porcelain").Output()
	if err == nil && len(bytes.TrimSpace(status)) > 0 {
		commit += "-dirty"
	}
	return commit
}

// median returns the median of ds (the mean of the two middle values for an
// even count). It returns 0 for an empty slice.
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
