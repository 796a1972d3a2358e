package proc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// helperEnv names the environment variable that makes the test binary,
// run as a child by helper, act out a process instead of running tests.
const helperEnv = "PROC_TEST_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(actOut(mode))
	}
	os.Exit(m.Run())
}

// actOut is the child process: it behaves as mode says and returns its
// exit status.
func actOut(mode string) int {
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	switch mode {
	case "serve": // a service: says where it listens, stops on SIGTERM
		fmt.Println("starting")
		fmt.Fprintln(os.Stderr, "a log line")
		fmt.Println("listening on http://127.0.0.1:1234 ")
		<-term
		return 0
	case "chatty": // more lines than are kept, then the one waited for
		for i := range 300 {
			fmt.Printf("line %d\n", i)
		}
		fmt.Println("ready")
		<-term
		return 0
	case "late": // the line comes after a while
		time.Sleep(300 * time.Millisecond)
		fmt.Print("ready now") // no newline: kept at exit
		return 0
	case "fail": // exits with an error before it is ready
		fmt.Fprintln(os.Stderr, "cannot open the database")
		return 3
	case "silent": // never says anything, stops on SIGTERM
		<-term
		return 0
	case "stubborn": // ignores SIGTERM
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ignoring SIGTERM")
		time.Sleep(time.Minute)
		return 0
	case "unclean": // exits with an error on SIGTERM
		fmt.Println("ready")
		<-term
		fmt.Fprintln(os.Stderr, "lost the journal")
		return 2
	}
	fmt.Fprintf(os.Stderr, "unknown mode %q\n", mode)
	return 100
}

// helper starts the test binary as a child acting out mode.
func helper(t *testing.T, mode string, opts ...Option) *Process {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	// A race-enabled child would sleep a second at exit.
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, "GORACE=atexit_sleep_ms=0")
	p, err := Start(cmd, append([]Option{WithName(mode)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Kill() })
	return p
}

func TestWaitLine(t *testing.T) {
	tests := []struct {
		name, mode, prefix string
		after              string // a line to wait for first, with a long timeout
		timeout            time.Duration
		want               string
		wantErr            error  // errors.Is; nil: no error
		wantNote           string // in the error: the output's tail
	}{
		{name: "stdout line", mode: "serve", prefix: "listening on ", timeout: 10 * time.Second, want: "http://127.0.0.1:1234"},
		{name: "stderr line", mode: "serve", prefix: "a log", timeout: 10 * time.Second, want: "line"},
		{name: "after 300 other lines", mode: "chatty", prefix: "ready", timeout: 10 * time.Second, want: ""},
		{name: "last line without newline", mode: "late", prefix: "ready", timeout: 10 * time.Second, want: "now"},
		{name: "exits first", mode: "fail", prefix: "listening on ", timeout: 10 * time.Second,
			wantErr: ErrExited, wantNote: "cannot open the database"},
		{name: "times out", mode: "serve", after: "listening on", prefix: "never printed", timeout: 300 * time.Millisecond,
			wantErr: context.DeadlineExceeded, wantNote: "a log line"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := helper(t, tc.mode)
			if tc.after != "" {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if _, err := p.WaitLine(ctx, tc.after); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			got, err := p.WaitLine(ctx, tc.prefix)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("WaitLine(%q) error %v, want %v", tc.prefix, err, tc.wantErr)
			}
			if err != nil {
				if !strings.Contains(err.Error(), tc.wantNote) || !strings.Contains(err.Error(), tc.mode) {
					t.Errorf("error %q lacks the process's name or its output %q", err, tc.wantNote)
				}
				return
			}
			if got != tc.want {
				t.Errorf("WaitLine(%q) = %q, want %q", tc.prefix, got, tc.want)
			}
		})
	}
}

func TestExitStatus(t *testing.T) {
	p := helper(t, "fail")
	err := p.Wait(context.Background())
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("Wait = %v, want exit status 3", err)
	}
	if !p.Exited() {
		t.Error("Exited is false after Wait")
	}
	if err := p.Stop(time.Second); err != nil {
		t.Errorf("Stop after Wait = %v, want nil: Wait reported the exit", err)
	}
}

func TestStop(t *testing.T) {
	tests := []struct {
		name, mode string
		before     func(p *Process) // before Stop
		wantErr    error            // errors.Is; nil: no error
		wantExit   int              // the exit status in the error; 0: none
		wantIn     string           // in the error
	}{
		{name: "clean", mode: "serve"},
		{name: "ignores SIGTERM", mode: "stubborn", wantErr: ErrKilled, wantIn: "ignoring SIGTERM"},
		{name: "unclean on SIGTERM", mode: "unclean", wantExit: 2, wantIn: "lost the journal"},
		{name: "exited on its own", mode: "fail", wantExit: 3, wantIn: "before it was stopped",
			before: func(p *Process) {
				for !p.Exited() {
					time.Sleep(10 * time.Millisecond)
				}
			}},
		{name: "killed before", mode: "serve", before: func(p *Process) { p.Kill() }},
		{name: "stopped before", mode: "unclean", before: func(p *Process) { p.Stop(5 * time.Second) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := helper(t, tc.mode)
			// Stop only once the child has set up its signals.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if tc.mode != "fail" {
				if _, err := p.WaitLine(ctx, ""); err != nil {
					t.Fatal(err)
				}
			}
			if tc.before != nil {
				tc.before(p)
			}
			start := time.Now()
			err := p.Stop(500 * time.Millisecond)
			if !p.Exited() {
				t.Fatal("the process runs on after Stop")
			}
			var ee *exec.ExitError
			switch {
			case tc.wantErr == nil && tc.wantExit == 0:
				if err != nil {
					t.Fatalf("Stop = %v, want nil", err)
				}
				return
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Fatalf("Stop = %v, want %v", err, tc.wantErr)
			case tc.wantExit != 0 && (!errors.As(err, &ee) || ee.ExitCode() != tc.wantExit):
				t.Fatalf("Stop = %v, want exit status %d", err, tc.wantExit)
			}
			if !strings.Contains(err.Error(), tc.wantIn) {
				t.Errorf("Stop = %q, want it to say %q", err, tc.wantIn)
			}
			if errors.Is(err, ErrKilled) && time.Since(start) < 500*time.Millisecond {
				t.Errorf("killed after %s, before the grace period", time.Since(start))
			}
		})
	}
}

func TestWaitUntil(t *testing.T) {
	tests := []struct {
		name    string
		mode    string
		ready   func(n int) error // n: the number of the check
		timeout time.Duration
		wantErr error
		wantIn  string
	}{
		{name: "third check", mode: "silent", timeout: 10 * time.Second, ready: func(n int) error {
			if n < 3 {
				return errors.New("not yet")
			}
			return nil
		}},
		{name: "never", mode: "silent", ready: func(int) error { return errors.New("connection refused") },
			timeout: time.Second, wantErr: context.DeadlineExceeded, wantIn: "connection refused"},
		{name: "process exits", mode: "fail", ready: func(int) error { return errors.New("connection refused") },
			timeout: 10 * time.Second, wantErr: ErrExited, wantIn: "cannot open the database"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := helper(t, tc.mode)
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			n := 0
			err := p.WaitUntil(ctx, "the check", func(context.Context) error { n++; return tc.ready(n) })
			if tc.wantErr == nil {
				if err != nil || n != 3 {
					t.Fatalf("WaitUntil = %v after %d checks, want nil after 3", err, n)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.wantIn) || !strings.Contains(err.Error(), "the check") {
				t.Fatalf("WaitUntil = %v, want %v saying %q and what it waited for", err, tc.wantErr, tc.wantIn)
			}
		})
	}
}

func TestWaitHealthy(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) < 3 {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte(`{"peer_id":"12D3KooW"}`))
	}))
	defer srv.Close()
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer down.Close()
	tests := []struct {
		name, mode, url string
		timeout         time.Duration
		want            string
		wantErr         error
		wantIn          string
	}{
		{name: "200 after two 503s", mode: "silent", url: srv.URL + "/healthz", timeout: 10 * time.Second, want: `{"peer_id":"12D3KooW"}`},
		{name: "503 until the deadline", mode: "silent", url: down.URL, timeout: time.Second, wantErr: context.DeadlineExceeded, wantIn: "HTTP 503"},
		{name: "process exits", mode: "fail", url: down.URL, timeout: 10 * time.Second, wantErr: ErrExited, wantIn: "cannot open the database"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := helper(t, tc.mode)
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			body, err := p.WaitHealthy(ctx, tc.url)
			if tc.wantErr == nil {
				if err != nil || string(body) != tc.want {
					t.Fatalf("WaitHealthy = %q, %v; want %q", body, err, tc.want)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.wantIn) || !strings.Contains(err.Error(), tc.url) {
				t.Fatalf("WaitHealthy = %v, want %v saying %q and the URL", err, tc.wantErr, tc.wantIn)
			}
		})
	}
}

// syncBuffer is a bytes.Buffer safe to read while a process writes it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestOutputs(t *testing.T) {
	log := filepath.Join(t.TempDir(), "serve.log")
	var out syncBuffer
	for run := range 2 {
		p := helper(t, "serve", WithLogFile(log), WithOutput(&out))
		if _, err := p.WaitLine(context.Background(), "listening on"); err != nil {
			t.Fatal(err)
		}
		if err := p.Stop(5 * time.Second); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(log)
		if err != nil {
			t.Fatal(err)
		}
		// Each run appends a header and its output.
		if n := strings.Count(string(b), "\n==> "); n != run+1 || strings.Count(string(b), "listening on http://127.0.0.1:1234") != run+1 ||
			!strings.Contains(string(b), "a log line") || !strings.Contains(string(b), os.Args[0]) {
			t.Fatalf("log after run %d:\n%s", run, b)
		}
	}
	if got := out.String(); strings.Count(got, "starting\n") != 2 || strings.Count(got, "a log line\n") != 2 || strings.Contains(got, "==>") {
		t.Fatalf("WithOutput got %q, want both runs' output and no headers", got)
	}
	if _, err := Start(exec.Command("true"), WithLogFile(filepath.Join(t.TempDir(), "no", "such", "dir", "log"))); err == nil {
		t.Error("Start with a log file it cannot create: no error")
	}
	cmd := exec.Command("true")
	cmd.Stdout = &out
	if _, err := Start(cmd); !errors.Is(err, errOutputSet) {
		t.Errorf("Start of a command with Stdout set = %v, want errOutputSet", err)
	}
}

func TestTail(t *testing.T) {
	p := helper(t, "chatty")
	if _, err := p.WaitLine(context.Background(), "ready"); err != nil {
		t.Fatal(err)
	}
	if got, want := p.Tail(3), "line 298\nline 299\nready"; got != want {
		t.Errorf("Tail(3) = %q, want %q", got, want)
	}
	lines := strings.Split(p.Tail(1000), "\n")
	if len(lines) != keptLines || lines[0] != "line 45" {
		t.Errorf("Tail(1000) has %d lines from %q, want the last %d from line 45", len(lines), lines[0], keptLines)
	}
	if p.Tail(0) != "" {
		t.Errorf("Tail(0) = %q", p.Tail(0))
	}
	// An earlier line that is no longer kept is not found.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := p.WaitLine(ctx, "line 3"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitLine of a dropped line = %v", err)
	}
}

func TestOutputLongLine(t *testing.T) {
	o := newOutput(nil)
	o.Write(bytes.Repeat([]byte("x"), maxLine+10))
	o.Write([]byte("yz\r\nlast"))
	o.flush()
	got := strings.Split(o.tail(10), "\n")
	if len(got) != 3 || len(got[0]) != maxLine || got[1] != strings.Repeat("x", 10)+"yz" || got[2] != "last" {
		t.Fatalf("lines of %d, %q, %q", len(got[0]), got[1], got[2])
	}
}

func TestDefaultName(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"/tmp/x/topcdn", "origin", "--data", "d"}, "topcdn origin"},
		{[]string{"nginx", "-c", "conf"}, "nginx"},
		{[]string{"/usr/bin/sleep"}, "sleep"},
	}
	for _, tc := range tests {
		cmd := exec.Command(tc.args[0], tc.args[1:]...)
		if got := defaultName(cmd); got != tc.want {
			t.Errorf("defaultName(%q) = %q, want %q", tc.args, got, tc.want)
		}
	}
}
