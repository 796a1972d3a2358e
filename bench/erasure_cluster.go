package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/internal/proc"
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

// service is a running server process: a topcdn service, with the URL
// it listens on, or another server (Caddy, nginx, CoreDNS).
type service struct {
	*proc.Process
	url string // "" for a server that does not print it
}

// startService starts bin with args and waits until it prints "listening
// on URL". The service is returned whenever the process started, even
// with an error, so the caller can stop it.
func startService(ctx context.Context, name, bin string, args ...string) (*service, error) {
	cmd := exec.Command(bin, args...)
	cmd.WaitDelay = 5 * time.Second
	p, err := proc.Start(cmd, proc.WithName(name))
	if err != nil {
		return nil, err
	}
	s := &service{Process: p}
	ctx, cancel := context.WithTimeout(ctx, serviceStartTimeout)
	defer cancel()
	s.url, err = p.WaitLine(ctx, "listening on ")
	return s, err
}

// exitReport says how a service that exited ended and what it printed
// last.
func (s *service) exitReport() string {
	return fmt.Sprintf("%s exited (%v):%s", s.Name(), s.Wait(context.Background()), tailOf(s.Tail(15)))
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
		if !s.Exited() {
			out = append(out, s.PID())
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
		if s.Exited() && !killedBySignal(s.Wait(context.Background())) {
			b.WriteString("\n" + s.exitReport())
		}
	}
	return b.String()
}

// killedBySignal reports whether a process's exit error says it ended by
// SIGKILL (as the degraded phase kills peers).
func killedBySignal(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
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
			if err := s.Stop(serviceStopGrace); err != nil {
				fmt.Fprintln(os.Stderr, err)
			}
		}()
	}
	wg.Wait()
}
