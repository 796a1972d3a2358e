package proc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/topcdn/topcdn/internal/httpkit"
)

// pollEvery is how often WaitUntil runs its check.
const pollEvery = 50 * time.Millisecond

var (
	// ErrExited is returned, wrapped with the exit status, when a process
	// exits while it is waited for.
	ErrExited = errors.New("process exited")
	// ErrKilled is returned, wrapped, by Stop when the process did not exit
	// within the grace period after SIGTERM and was killed.
	ErrKilled = errors.New("killed: no exit within the grace period after SIGTERM")
	// errOutputSet is returned by Start for a command whose output is
	// already taken.
	errOutputSet = errors.New("cmd.Stdout or cmd.Stderr is already set")
)

// Option configures Start.
type Option func(*options)

type options struct {
	name    string
	out     io.Writer
	logFile string
}

// WithName names the process in errors. Default: the base name of the
// command, and its first argument unless that is a flag ("topcdn origin").
// If name is empty, it is ignored.
func WithName(name string) Option {
	return func(o *options) {
		if name != "" {
			o.name = name
		}
	}
}

// WithOutput sends the process's standard output and standard error to w
// as well. Writes to w are serialized; an error from w is ignored, so a
// full log never blocks or kills the process. If w is nil, it is ignored.
func WithOutput(w io.Writer) Option {
	return func(o *options) {
		if w != nil {
			o.out = w
		}
	}
}

// WithLogFile appends the process's standard output and standard error to
// the file at path (created with mode 0644), after a header line with the
// time and the command line; the file is closed when the process exits.
// If path is empty, it is ignored.
func WithLogFile(path string) Option {
	return func(o *options) {
		if path != "" {
			o.logFile = path
		}
	}
}

// Process is a child process started by Start. Its methods are safe for
// concurrent use.
type Process struct {
	name string
	cmd  *exec.Cmd
	out  *output
	done chan struct{} // closed once the process has exited and all its output is read
	err  error         // what cmd.Wait returned; set before done is closed

	mu       sync.Mutex
	reported bool // Wait, Kill or Stop has returned the process's end
}

// Start starts cmd with its standard output and standard error going, as
// lines, to the Process (for WaitLine and Tail) and to the writer and log
// file the options name. The caller may set cmd's environment, directory,
// SysProcAttr and WaitDelay, but not its Stdout or Stderr.
func Start(cmd *exec.Cmd, opts ...Option) (*Process, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	name := o.name
	if name == "" {
		name = defaultName(cmd)
	}
	if cmd.Stdout != nil || cmd.Stderr != nil {
		return nil, fmt.Errorf("proc: %s: %w", name, errOutputSet)
	}
	var log *os.File
	dst := o.out
	if o.logFile != "" {
		f, err := os.OpenFile(o.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("proc: %s: %w", name, err)
		}
		fmt.Fprintf(f, "\n==> %s %s %q\n", time.Now().Format(time.RFC3339), cmd.Path, cmd.Args[1:])
		log, dst = f, f
		if o.out != nil {
			dst = io.MultiWriter(f, o.out)
		}
	}
	p := &Process{name: name, cmd: cmd, out: newOutput(dst), done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		if log != nil {
			log.Close()
		}
		return nil, fmt.Errorf("proc: starting %s: %w", name, err)
	}
	go func() {
		err := cmd.Wait()
		p.out.flush()
		if log != nil {
			log.Close()
		}
		p.err = err
		close(p.done)
	}()
	return p, nil
}

// defaultName is "topcdn origin" for `topcdn origin --data …`, "nginx" for
// `nginx -c …`.
func defaultName(cmd *exec.Cmd) string {
	name := filepath.Base(cmd.Path)
	if len(cmd.Args) > 1 && cmd.Args[1] != "" && !strings.HasPrefix(cmd.Args[1], "-") {
		name += " " + cmd.Args[1]
	}
	return name
}

// Name returns the name the process has in errors.
func (p *Process) Name() string { return p.name }

// PID returns the process ID.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Tail returns the last n lines (at most 256) the process wrote to its
// standard output and standard error, joined by newlines.
func (p *Process) Tail(n int) string { return p.out.tail(n) }

// Wait waits until the process exits and returns its exit status as an
// error (an *exec.ExitError, wrapped) unless it exited with status 0; or
// ctx's error if ctx ends first.
func (p *Process) Wait(ctx context.Context) error {
	select {
	case <-p.done:
	case <-ctx.Done():
		return fmt.Errorf("proc: waiting for %s to exit: %w", p.name, ctx.Err())
	}
	p.report()
	if p.err != nil {
		return fmt.Errorf("proc: %s: %w", p.name, p.err)
	}
	return nil
}

// Kill sends SIGKILL and waits until the process has exited.
func (p *Process) Kill() error {
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("proc: killing %s: %w", p.name, err)
	}
	<-p.done
	p.report()
	return nil
}

// Stop sends SIGTERM and waits for the process to exit; after grace it
// kills the process and returns ErrKilled. It returns an error for an
// exit with a status other than 0, also for a process that had exited on
// its own before Stop. Once Wait, Kill or Stop has returned the process's
// end, Stop waits for it to exit and returns nil.
func (p *Process) Stop(grace time.Duration) error {
	if !p.report() {
		<-p.done
		return nil
	}
	select {
	case <-p.done:
		if p.err != nil {
			return fmt.Errorf("proc: %s exited before it was stopped: %w%s", p.name, p.err, p.out.note())
		}
		return nil
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("proc: stopping %s: %w", p.name, err)
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		if p.err != nil {
			return fmt.Errorf("proc: %s exited uncleanly on SIGTERM: %w%s", p.name, p.err, p.out.note())
		}
		return nil
	case <-t.C:
		p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("proc: %s: %w (%s)%s", p.name, ErrKilled, grace, p.out.note())
	}
}

// report marks the process's end as returned to the caller, and reports
// whether it was not yet.
func (p *Process) report() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	first := !p.reported
	p.reported = true
	return first
}

// WaitLine waits until the process writes a line that starts with prefix
// and returns the rest of it, trimmed of spaces. The line may have been
// written before WaitLine was called, if it is among the last 256.
// WaitLine fails, with the tail of the output, when ctx ends or the
// process exits first.
func (p *Process) WaitLine(ctx context.Context, prefix string) (string, error) {
	next := 0
	for {
		rest, ok, grew := p.out.find(prefix, &next)
		if ok {
			return rest, nil
		}
		select {
		case <-grew:
		case <-p.done:
			// All output is read once done is closed.
			if rest, ok, _ := p.out.find(prefix, &next); ok {
				return rest, nil
			}
			return "", p.exitedWaiting(fmt.Sprintf("a line %q", prefix), nil)
		case <-ctx.Done():
			return "", fmt.Errorf("proc: %s: waiting for a line %q: %w%s", p.name, prefix, ctx.Err(), p.out.note())
		}
	}
}

// WaitUntil runs ready every 50 ms until it returns nil. It fails, with
// the last error ready returned and the tail of the output, when ctx ends
// or the process exits first. what says what is waited for, in errors.
func (p *Process) WaitUntil(ctx context.Context, what string, ready func(context.Context) error) error {
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	var last error
	for {
		err := ready(ctx)
		if err == nil {
			return nil
		}
		if last == nil || ctx.Err() == nil { // not a check ctx's end cut short
			last = err
		}
		select {
		case <-p.done:
			return p.exitedWaiting(what, last)
		case <-ctx.Done():
			return fmt.Errorf("proc: %s: waiting for %s: %w (last check: %v)%s", p.name, what, ctx.Err(), last, p.out.note())
		case <-t.C:
		}
	}
}

// exitedWaiting is the error of a wait the process's exit ended; last is
// the last check's error, if there was a check.
func (p *Process) exitedWaiting(what string, last error) error {
	var check string
	if last != nil {
		check = fmt.Sprintf(" (last check: %v)", last)
	}
	if p.err != nil {
		return fmt.Errorf("proc: %s: %w while waiting for %s: %w%s%s", p.name, ErrExited, what, p.err, check, p.out.note())
	}
	return fmt.Errorf("proc: %s: %w with status 0 while waiting for %s%s%s", p.name, ErrExited, what, check, p.out.note())
}

// WaitHealthy waits until a GET of url answers 2xx and returns the body
// of that answer (at most 64 KiB). It fails as WaitUntil does.
func (p *Process) WaitHealthy(ctx context.Context, url string) ([]byte, error) {
	if _, err := http.NewRequest(http.MethodGet, url, nil); err != nil {
		return nil, fmt.Errorf("proc: %s: health URL: %w", p.name, err)
	}
	client := &http.Client{Timeout: 2 * time.Second}
	var body []byte
	err := p.WaitUntil(ctx, url+" to answer 2xx", func(ctx context.Context) error {
		b, err := httpkit.Get(ctx, client, url, 64<<10)
		body = b
		return err
	})
	return body, err
}
