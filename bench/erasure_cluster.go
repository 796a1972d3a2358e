package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// cpuUse is the CPU time (user + system) used during a phase by the
// harness and by the topcdn processes.
type cpuUse struct {
	harness, services time.Duration
	known             bool
}

// cpuMeter measures the CPU time the harness and some processes use.
type cpuMeter struct {
	pids  []int
	start []time.Duration
	self  time.Duration
	ok    bool
}

// startCPU starts measuring the harness and pids.
func startCPU(pids []int) *cpuMeter {
	m := &cpuMeter{pids: pids, start: make([]time.Duration, len(pids))}
	m.self, m.ok = selfCPU()
	for i, pid := range pids {
		var ok bool
		m.start[i], ok = procCPU(pid)
		m.ok = m.ok && ok
	}
	return m
}

// stop returns the CPU time used since startCPU.
func (m *cpuMeter) stop() cpuUse {
	self, ok := selfCPU()
	if !ok || !m.ok {
		return cpuUse{}
	}
	u := cpuUse{harness: self - m.self, known: true}
	for i, pid := range m.pids {
		if t, ok := procCPU(pid); ok {
			u.services += t - m.start[i]
		}
	}
	return u
}

// service is a running topcdn service process.
type service struct {
	name string
	cmd  *exec.Cmd
	url  string
	logs *lineWriter
	done chan struct{} // closed once the process has exited and been waited for
}

// startService starts bin with args and waits until it prints "listening
// on URL". The service is returned whenever the process started, even
// with an error, so the caller can stop it.
func startService(ctx context.Context, name, bin string, args ...string) (*service, error) {
	urls := make(chan string, 1)
	s := &service{name: name, cmd: exec.Command(bin, args...), done: make(chan struct{}),
		logs: newLineWriter(io.Discard, func() string { return "" })}
	s.cmd.Stdout = &listenWatcher{found: urls}
	s.cmd.Stderr = s.logs
	s.cmd.WaitDelay = 5 * time.Second
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	var waitErr error
	go func() {
		waitErr = s.cmd.Wait()
		close(s.done)
	}()
	timer := time.NewTimer(serviceStartTimeout)
	defer timer.Stop()
	select {
	case s.url = <-urls:
		return s, nil
	case <-s.done:
		return s, fmt.Errorf("%s exited before it was ready: %v%s", name, waitErr, s.logs.Tail())
	case <-timer.C:
		return s, fmt.Errorf("%s did not print %q within %s%s", name, "listening on", serviceStartTimeout, s.logs.Tail())
	case <-ctx.Done():
		return s, ctx.Err()
	}
}

// stop sends SIGTERM and waits for the process to exit, killing it after
// serviceStopGrace.
func (s *service) stop() {
	select {
	case <-s.done:
		return
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		s.kill()
		return
	}
	t := time.NewTimer(serviceStopGrace)
	defer t.Stop()
	select {
	case <-s.done:
	case <-t.C:
		fmt.Fprintf(os.Stderr, "%s did not stop within %s of SIGTERM; killing it\n", s.name, serviceStopGrace)
		s.kill()
	}
}

// kill sends SIGKILL and waits for the process to exit.
func (s *service) kill() {
	s.cmd.Process.Kill()
	<-s.done
}

// exited reports whether the process has exited.
func (s *service) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// listenWatcher is a service's stdout: it sends the URL of the first
// "listening on URL" line to found and discards everything else.
type listenWatcher struct {
	found chan<- string
	buf   []byte
	sent  bool
}

func (w *listenWatcher) Write(p []byte) (int, error) {
	if w.sent {
		return len(p), nil
	}
	w.buf = append(w.buf, p...)
	for !w.sent {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		line := strings.TrimSpace(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
		if u, ok := strings.CutPrefix(line, "listening on "); ok {
			w.found <- u
			w.sent = true
		}
	}
	if len(w.buf) > 64<<10 {
		w.buf = w.buf[len(w.buf)-4<<10:]
	}
	return len(p), nil
}

// erasureCluster is an origin and its storage peers, each a process.
type erasureCluster struct {
	mu     sync.Mutex
	all    []*service // every process started, for stop
	origin *service
	peers  []*clusterPeer
}

// clusterPeer is one storage peer of a cluster.
type clusterPeer struct {
	svc *service
	id  peer.ID
}

func (c *erasureCluster) add(s *service) {
	if s == nil {
		return
	}
	c.mu.Lock()
	c.all = append(c.all, s)
	c.mu.Unlock()
}

// start runs `topcdn origin --no-stripe` with the key at keyPath, then n
// `topcdn storage` peers pointed at it, all on loopback with data under
// dir. Whatever it returns, the caller must call stop.
func (c *erasureCluster) start(ctx context.Context, bin, dir, keyPath string, n int) error {
	var err error
	c.origin, err = startService(ctx, "origin", bin, "origin", "--no-stripe",
		"--data", filepath.Join(dir, "origin"), "--key", keyPath, "--listen", "127.0.0.1:0")
	c.add(c.origin)
	if err != nil {
		return err
	}
	c.peers = make([]*clusterPeer, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("storage peer %d", i)
			s, err := startService(ctx, name, bin, "storage",
				"--data", filepath.Join(dir, fmt.Sprintf("peer-%02d", i)), "--listen", "127.0.0.1:0",
				"--origin", c.origin.url, "--capacity", erasurePeerCapacity, "--heartbeat", "1s")
			c.add(s)
			c.peers[i], errs[i] = &clusterPeer{svc: s}, err
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// peerURLs returns the peers' base URLs, in start order.
func (c *erasureCluster) peerURLs() []string {
	out := make([]string, len(c.peers))
	for i, p := range c.peers {
		out[i] = p.svc.url
	}
	return out
}

// pids returns the process IDs of the services still running.
func (c *erasureCluster) pids() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []int
	for _, s := range c.all {
		if !s.exited() {
			out = append(out, s.cmd.Process.Pid)
		}
	}
	return out
}

// logTails returns the last log lines of the services that exited
// unexpectedly, for an error message.
func (c *erasureCluster) logTails() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	for _, s := range c.all {
		if s.exited() && s.cmd.ProcessState != nil && !killedBySignal(s.cmd.ProcessState) {
			fmt.Fprintf(&b, "\n%s exited (%v):%s", s.name, s.cmd.ProcessState, s.logs.Tail())
		}
	}
	return b.String()
}

// killedBySignal reports whether a process ended by SIGKILL (as the
// degraded phase kills peers).
func killedBySignal(ps *os.ProcessState) bool {
	ws, ok := ps.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// stop stops every process of the cluster, in parallel.
func (c *erasureCluster) stop() {
	c.mu.Lock()
	all := slices.Clone(c.all)
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.stop()
		}()
	}
	wg.Wait()
}
