package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/topcdn/topcdn/internal/tick"
)

// Kubo build parameters. Kubo v0.43.1 cannot be `go install`ed: its go.mod
// replaces go-libp2p with a fork the module proxy does not serve, so the
// harness copies the module source, drops that replace directive and pins
// the upstream go-libp2p release instead.
const (
	kuboModule    = "github.com/ipfs/kubo"
	kuboVersion   = "v0.43.1"
	libp2pModule  = "github.com/libp2p/go-libp2p"
	libp2pVersion = "v0.50.0"

	// kuboBuildTimeout bounds a from-scratch kubo build (about 16 minutes
	// on 2 cores with a cold build cache).
	kuboBuildTimeout = 90 * time.Minute
)

// kuboBinaryPath returns where the cached kubo binary lives inside cache.
func kuboBinaryPath(cache string) string {
	return filepath.Join(cache, "kubo-"+kuboVersion+"-ipfs")
}

// ensureKubo returns the path and version of a working kubo binary, building
// and caching it in cache if no verified binary is present. Concurrent
// harness processes serialize on a lock file so only one builds.
func ensureKubo(ctx context.Context, cache string) (bin, version string, err error) {
	bin = kuboBinaryPath(cache)
	version, err = verifyKubo(ctx, bin)
	if err == nil {
		return bin, version, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintf(os.Stderr, "cached kubo is unusable, rebuilding: %v\n", err)
	}

	unlock, err := acquireLock(ctx, filepath.Join(cache, "kubo-build.lock"))
	if err != nil {
		return "", "", err
	}
	defer unlock()
	// Another process may have finished the build while we waited.
	if version, err = verifyKubo(ctx, bin); err == nil {
		return bin, version, nil
	}

	if err := buildKubo(ctx, cache, bin); err != nil {
		return "", "", err
	}
	version, err = verifyKubo(ctx, bin)
	if err != nil {
		return "", "", fmt.Errorf("verifying freshly built kubo: %w", err)
	}
	return bin, version, nil
}

// verifyKubo runs `bin version` and checks it reports kuboVersion. It returns
// the reported version, or an error wrapping fs.ErrNotExist if bin is absent.
func verifyKubo(ctx context.Context, bin string) (string, error) {
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("checking kubo binary: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "version").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("running %s version: %w%s", bin, err, tailOf(string(out)))
	}
	got := strings.TrimSpace(string(out))
	want := "ipfs version " + strings.TrimPrefix(kuboVersion, "v")
	if got != want {
		return "", fmt.Errorf("%s reports %q, want %q", bin, got, want)
	}
	return strings.TrimPrefix(got, "ipfs version "), nil
}

// acquireLock takes an exclusive lock on path, polling until it is free or
// ctx is done. The returned function releases it.
func acquireLock(ctx context.Context, path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening lock file: %w", err)
	}
	waiting := false
	for {
		ok, err := tryLock(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		if ok {
			return func() { f.Close() }, nil
		}
		if !waiting {
			fmt.Fprintf(os.Stderr, "waiting for another process holding %s (a kubo build in progress?) ...\n", path)
			waiting = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for lock %s: %w", path, context.Cause(ctx))
		case <-time.After(2 * time.Second):
		}
	}
}

// buildKubo builds kubo from the module source into bin. It works in
// cache/kubo-build (source copy in src/, full output in build.log) and
// writes bin atomically, so an interrupted build never leaves a binary that
// looks valid.
func buildKubo(ctx context.Context, cache, bin string) error {
	ctx, cancel := context.WithTimeout(ctx, kuboBuildTimeout)
	defer cancel()

	buildDir := filepath.Join(cache, "kubo-build")
	if err := os.MkdirAll(buildDir, 0o755); err != nil {
		return fmt.Errorf("creating kubo build dir: %w", err)
	}
	logFile, err := os.Create(filepath.Join(buildDir, "build.log"))
	if err != nil {
		return fmt.Errorf("creating kubo build log: %w", err)
	}
	defer logFile.Close()

	start := time.Now()
	lw := newLineWriter(io.MultiWriter(os.Stderr, logFile), func() string {
		return fmt.Sprintf("kubo build [%6s] ", time.Since(start).Truncate(time.Second))
	})
	fmt.Fprintf(os.Stderr, "building kubo %s into %s (takes ~16 min on 2 cores with a cold Go build cache; log: %s)\n",
		kuboVersion, bin, logFile.Name())

	// Heartbeat so the long silent link step does not look like a hang.
	heartbeatCtx, stopHeartbeat := context.WithCancel(ctx)
	defer stopHeartbeat()
	go tick.Every(heartbeatCtx, time.Minute, func(context.Context) { lw.Println("still building ...") })

	lw.Println("downloading " + kuboModule + "@" + kuboVersion)
	modDir, err := downloadModule(ctx, buildDir, kuboModule+"@"+kuboVersion)
	if err != nil {
		return fmt.Errorf("building kubo: %w", err)
	}

	src := filepath.Join(buildDir, "src")
	lw.Println("copying " + modDir + " to " + src)
	if err := os.RemoveAll(src); err != nil {
		return fmt.Errorf("building kubo: clearing old source: %w", err)
	}
	// os.CopyFS creates files 0666 and directories 0777 (before umask), so
	// the copy is writable even though the module cache is read-only.
	if err := os.CopyFS(src, os.DirFS(modDir)); err != nil {
		return fmt.Errorf("building kubo: copying module source: %w", err)
	}

	tmp := bin + ".tmp"
	defer os.Remove(tmp)
	env := []string{"GOWORK=off"}
	steps := [][]string{
		{"go", "mod", "edit", "-dropreplace", libp2pModule},
		{"go", "get", libp2pModule + "@" + libp2pVersion},
		{"go", "build", "-v", "-o", tmp, "./cmd/ipfs"},
	}
	for _, step := range steps {
		lw.Println("$ " + shellQuote(step[0], step[1:]...))
		if err := streamCmd(ctx, lw, src, env, step[0], step[1:]...); err != nil {
			return fmt.Errorf("building kubo: %w", err)
		}
	}
	if err := os.Rename(tmp, bin); err != nil {
		return fmt.Errorf("building kubo: installing binary: %w", err)
	}
	lw.Println("done: " + bin)
	return nil
}

// downloadModule fetches module@version into the module cache via
// `go mod download -json` and returns its (read-only) source directory.
func downloadModule(ctx context.Context, workDir, moduleAtVersion string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", moduleAtVersion)
	cmd.Dir = workDir // outside any module, so the download is standalone
	cmd.Env = append(os.Environ(), "GOWORK=off")
	out, runErr := cmd.Output()
	var info struct {
		Dir   string
		Error string
	}
	if err := json.Unmarshal(out, &info); err != nil {
		if runErr != nil {
			err = runErr
		}
		return "", fmt.Errorf("go mod download %s: %w", moduleAtVersion, err)
	}
	if info.Error != "" {
		return "", fmt.Errorf("go mod download %s: %s", moduleAtVersion, info.Error)
	}
	if runErr != nil {
		return "", fmt.Errorf("go mod download %s: %w", moduleAtVersion, runErr)
	}
	if info.Dir == "" {
		return "", fmt.Errorf("go mod download %s: no Dir in output", moduleAtVersion)
	}
	return info.Dir, nil
}

// initKuboRepo creates a fresh offline kubo repository at repo using the
// "test" profile (no bootstrap peers, no listeners) and returns the
// environment entries that select it.
func initKuboRepo(ctx context.Context, bin, repo string) ([]string, error) {
	env := []string{"IPFS_PATH=" + repo}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "init", "--profile=test")
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initializing kubo repo %s: %w%s", repo, err, tailOf(string(out)))
	}
	return env, nil
}
