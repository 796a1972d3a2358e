package devnet

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// proc is one child process of the devnet: a topcdn role.
type proc struct {
	name   string   // e.g. "storage-03"
	args   []string // after the binary
	env    []string // added to the environment
	health string   // URL that answers 200 once the role serves
	log    string   // file its stdout and stderr go to

	cmd     *exec.Cmd
	done    chan struct{} // closed once it exited and was waited for
	waitErr error
	peerID  string // from its health answer, when it gives one
}

// start runs the process with its output appended to its log file. The
// child gets its own process group, so a Ctrl-C in the terminal reaches
// the devnet, which stops its children in order, and (on Linux) a
// SIGTERM if the devnet itself dies.
func (p *proc) start(bin string) error {
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("devnet: %s: %w", p.name, err)
	}
	fmt.Fprintf(f, "\n==> %s %s %q\n", time.Now().Format(time.RFC3339), bin, p.args)
	p.cmd = exec.Command(bin, p.args...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	p.cmd.Env = append(os.Environ(), p.env...)
	p.cmd.SysProcAttr = sysProcAttr()
	if err := p.cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("devnet: starting %s: %w", p.name, err)
	}
	p.done = make(chan struct{})
	go func() {
		p.waitErr = p.cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return nil
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	if p.done == nil {
		return true
	}
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// pid returns the process ID, or 0 if it never started.
func (p *proc) pid() int {
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// waitHealthy polls the health URL until it answers 200, the process
// exits, or timeout passes. A JSON answer with "peer_id" or "peer" names
// the process's peer ID.
func (p *proc) waitHealthy(ctx context.Context, timeout time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", p.health, nil)
		if resp, err := client.Do(req); err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				var id struct {
					PeerID string `json:"peer_id"`
					Peer   string `json:"peer"`
				}
				if json.Unmarshal(body, &id) == nil {
					p.peerID = cmp.Or(id.PeerID, id.Peer) // services say peer_id, edges peer
				}
				return nil
			}
		}
		if p.exited() {
			return fmt.Errorf("devnet: %s exited (%v); see %s", p.name, p.waitErr, p.log)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("devnet: %s did not answer %s within %s; see %s", p.name, p.health, timeout, p.log)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM and waits, killing the process after grace.
func (p *proc) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// portsFree checks that nothing listens on the TCP (and, for the DNS
// router, UDP) addresses a devnet is about to use: a devnet left running
// would otherwise answer the new one's health checks.
func portsFree(tcp, udp []string) error {
	var errs []error
	for _, a := range tcp {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s is in use", a))
			continue
		}
		ln.Close()
	}
	for _, a := range udp {
		c, err := net.ListenPacket("udp", a)
		if err != nil {
			errs = append(errs, fmt.Errorf("udp %s is in use", a))
			continue
		}
		c.Close()
	}
	if len(errs) > 0 {
		return fmt.Errorf("devnet: %w (is another devnet running? its pids are in its devnet.json; or pick other ports with --port-offset)", errors.Join(errs...))
	}
	return nil
}

// logPath returns the log file of a role under dir.
func logPath(dir, name string) string { return filepath.Join(dir, "logs", name+".log") }
