package devnet

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/topcdn/topcdn/internal/httpkit"
	"github.com/topcdn/topcdn/internal/proc"
)

// role is one child process of the devnet: a topcdn role.
type role struct {
	name   string         // e.g. "storage-03"
	bin    string         // the binary; "": topcdn's
	args   []string       // after the binary
	env    []string       // added to the environment
	health string         // URL that answers 200 once the role serves
	roots  *x509.CertPool // verify an https health URL against these; nil: the system's
	log    string         // file its stdout and stderr go to

	p      *proc.Process // nil until started
	peerID string        // from its health answer, when it gives one
}

// start runs the process with its output appended to its log file. The
// child gets its own process group, so a Ctrl-C in the terminal reaches
// the devnet, which stops its children in order, and (on Linux) a
// SIGTERM if the devnet itself dies.
func (r *role) start(bin string) error {
	cmd := exec.Command(cmp.Or(r.bin, bin), r.args...)
	cmd.Env = append(os.Environ(), r.env...)
	cmd.SysProcAttr = sysProcAttr()
	p, err := proc.Start(cmd, proc.WithName(r.name), proc.WithLogFile(r.log))
	if err != nil {
		return fmt.Errorf("devnet: %w", err)
	}
	r.p = p
	return nil
}

// exited reports whether the process has ended (or never started).
func (r *role) exited() bool { return r.p == nil || r.p.Exited() }

// pid returns the process ID, or 0 if it never started.
func (r *role) pid() int {
	if r.p == nil {
		return 0
	}
	return r.p.PID()
}

// waitHealthy waits until the health URL answers 200, failing if the
// process exits or timeout passes. A JSON answer with "peer_id" or
// "peer" names the process's peer ID.
func (r *role) waitHealthy(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	if r.roots != nil {
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: r.roots}}
	}
	var body []byte
	err := r.p.WaitUntil(ctx, r.health+" to answer 2xx", func(ctx context.Context) error {
		b, err := httpkit.Get(ctx, client, r.health, 64<<10)
		body = b
		return err
	})
	if err != nil {
		return fmt.Errorf("devnet: %w\nsee %s", err, r.log)
	}
	var id struct {
		PeerID string `json:"peer_id"`
		Peer   string `json:"peer"`
	}
	if json.Unmarshal(body, &id) == nil {
		r.peerID = cmp.Or(id.PeerID, id.Peer) // services say peer_id, edges peer
	}
	return nil
}

// stop sends SIGTERM and waits, killing the process after grace. How it
// ended is in its log.
func (r *role) stop(grace time.Duration) {
	if r.p != nil {
		r.p.Stop(grace)
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
