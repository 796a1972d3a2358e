package dnsroute

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// UDPServer serves a Router on one UDP socket. Unlike a dns.Server it
// keeps ready-to-send responses: a query whose bytes (after the ID) and
// client subnet were answered before under the same snapshot of names and
// edges is answered by copying those bytes and the new ID, without
// decoding. Response rate limiting (Config.RRLRate) applies to every
// response, ready or built, per client subnet and response (see rrl).
type UDPServer struct {
	r       *Router
	conn    *net.UDPConn
	workers int
	closed  atomic.Bool
	wg      sync.WaitGroup
}

// NewUDPServer returns a server for r on conn, which must be bound to a
// specific address (not 0.0.0.0 or ::), so that replies leave from the
// address queried.
func (r *Router) NewUDPServer(conn *net.UDPConn) (*UDPServer, error) {
	la, ok := conn.LocalAddr().(*net.UDPAddr)
	if !ok || la.IP.IsUnspecified() {
		return nil, fmt.Errorf("dnsroute: udp: listen on a specific address, not %s", conn.LocalAddr())
	}
	return &UDPServer{r: r, conn: conn, workers: max(2, runtime.GOMAXPROCS(0))}, nil
}

// Serve answers queries until ShutdownContext is called. It reads with
// several goroutines on the one socket.
func (u *UDPServer) Serve() error {
	errc := make(chan error, u.workers)
	for range u.workers {
		u.wg.Add(1)
		go func() {
			defer u.wg.Done()
			errc <- u.loop()
		}()
	}
	u.wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			return err
		}
	}
	return nil
}

// ShutdownContext stops the server: it closes the socket and waits, until
// ctx is done, for queries being answered.
func (u *UDPServer) ShutdownContext(ctx context.Context) error {
	u.closed.Store(true)
	err := u.conn.Close()
	done := make(chan struct{})
	go func() {
		u.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("dnsroute: udp shutdown: %w", ctx.Err())
	}
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("dnsroute: udp shutdown: %w", err)
	}
	return nil
}

// keyLen is the length of the client part of a cache key.
const keyLen = 16

// Batching: each reader takes up to batchSize queries per system call
// (recvmmsg on Linux) and sends the ready answers among them with one
// (sendmmsg); a query longer than maxQuery is dropped.
const (
	batchSize = 32
	maxQuery  = 4096
)

// batchConn reads and writes several datagrams per system call
// (golang.org/x/net's ipv4 and ipv6 PacketConn).
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

func newBatchConn(c *net.UDPConn) batchConn {
	if la, ok := c.LocalAddr().(*net.UDPAddr); ok && la.IP.To4() == nil {
		return ipv6.NewPacketConn(c)
	}
	return ipv4.NewPacketConn(c)
}

// loop is one reader of the socket.
func (u *UDPServer) loop() error {
	r := u.r
	bc := newBatchConn(u.conn)
	in := make([]ipv4.Message, batchSize)
	for i := range in {
		in[i].Buffers = [][]byte{make([]byte, maxQuery+1)}
	}
	out := make([]ipv4.Message, 0, batchSize)
	outBufs := make([][1][]byte, batchSize)
	for i := range outBufs {
		outBufs[i][0] = make([]byte, 0, ednsSize)
	}
	key := make([]byte, 0, 512+keyLen)
	for {
		n, err := bc.ReadBatch(in, 0)
		if err != nil {
			if u.closed.Load() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			r.log.Warn("udp read", zap.Error(err))
			time.Sleep(10 * time.Millisecond)
			continue
		}
		out = out[:0]
		for i := range in[:n] {
			m := &in[i]
			ua, ok := m.Addr.(*net.UDPAddr)
			if !ok || m.N > maxQuery { // a datagram that filled the buffer may be cut
				continue
			}
			j := len(out)
			resp := u.handle(m.Buffers[0][:m.N], ua.AddrPort(), &key, outBufs[j][0][:0])
			if resp != nil {
				outBufs[j][0] = resp
				out = append(out, ipv4.Message{Buffers: outBufs[j][:], Addr: m.Addr})
			}
		}
		for len(out) > 0 {
			k, err := bc.WriteBatch(out, 0)
			if err != nil || k == 0 {
				break // the client's loss; UDP gives no guarantee
			}
			out = out[k:]
		}
	}
}

// handle answers one datagram. A ready answer from the response cache is
// appended to buf and returned for the caller to send; everything else is
// answered (or dropped) here, and handle returns nil.
func (u *UDPServer) handle(pkt []byte, ap netip.AddrPort, key *[]byte, buf []byte) []byte {
	r := u.r
	if len(pkt) < 12 || pkt[2]&0x80 != 0 || ap.Port() == 0 {
		return nil // too short to answer, a response, or an impossible source: drop
	}
	start := time.Now()
	src := ap.Addr().Unmap()
	s := r.snap.Load()
	sub := subnet(src).As16()
	*key = append(append((*key)[:0], pkt[2:]...), sub[:]...)
	if c := s.cache.get(*key); c != nil {
		if r.rrl != nil {
			if act := r.rrl.check(src, c.rrlKey, start); act != rrlAllow {
				if act == rrlSlip {
					u.slip(pkt, ap)
				}
				return nil
			}
		}
		buf = append(buf, c.b...)
		buf[0], buf[1] = pkt[0], pkt[1]
		r.countSent(c.handed, src, s, &c.counted)
		c.queries.Inc()
		r.metrics.cacheHits.Inc()
		r.metrics.udpDuration.Observe(time.Since(start).Seconds())
		return buf
	}
	q, err := unpack(pkt)
	if err != nil {
		u.formErr(pkt, ap)
		return nil
	}
	r.ServeDNS(&udpWriter{u: u, ap: ap, key: *key, pkt: pkt}, q)
	return nil
}

// unpack decodes a query.
func unpack(pkt []byte) (*dns.Msg, error) {
	q := new(dns.Msg)
	if err := q.Unpack(pkt); err != nil {
		return nil, fmt.Errorf("dnsroute: unpack query: %w", err)
	}
	return q, nil
}

// slip sends the empty truncated response that stands for a rate-limited
// answer to pkt.
func (u *UDPServer) slip(pkt []byte, ap netip.AddrPort) {
	if q, err := unpack(pkt); err == nil {
		if b, err := slipResponse(q).Pack(); err == nil {
			u.conn.WriteToUDPAddrPort(b, ap)
		}
	}
}

// formErr answers a query that does not decode with FORMERR: its ID and
// opcode, no sections. It is rate limited with the router's other errors.
func (u *UDPServer) formErr(pkt []byte, ap netip.AddrPort) {
	m := new(dns.Msg)
	m.Id = uint16(pkt[0])<<8 | uint16(pkt[1])
	m.Response = true
	m.Opcode = int(pkt[2]>>3) & 0xf
	m.Rcode = dns.RcodeFormatError
	if l := u.r.rrl; l != nil && l.check(ap.Addr().Unmap(), l.key(m, u.r.cfg.Zone), time.Now()) != rrlAllow {
		return // a slip would need the question, which did not decode
	}
	if b, err := m.Pack(); err == nil {
		u.conn.WriteToUDPAddrPort(b, ap)
	}
	u.r.metrics.queries.WithLabelValues("other", rcodeLabel(dns.RcodeFormatError)).Inc()
}

// udpWriter is the dns.ResponseWriter of one UDP query of a UDPServer.
type udpWriter struct {
	u   *UDPServer
	ap  netip.AddrPort
	key []byte // the cache key of the query
	pkt []byte // the query's bytes, valid during ServeDNS
}

// writeCached sends m, when send is set, and keeps its bytes in snapshot
// s's cache with rrlKey, its rate limiting key (rrl.key).
func (w *udpWriter) writeCached(m *dns.Msg, s *snapshot, handed handout, rrlKey uint64, send bool) {
	b, err := m.Pack()
	if err != nil {
		w.u.r.log.Warn("packing a response", zap.Error(err))
		return
	}
	if send {
		w.u.conn.WriteToUDPAddrPort(b, w.ap)
	}
	s.cache.put(w.key, &cachedResp{b: b, handed: handed, rrlKey: rrlKey,
		queries: w.u.r.metrics.queries.WithLabelValues(typeLabel(qtypeOf(m)), rcodeLabel(m.Rcode))})
}

func qtypeOf(m *dns.Msg) uint16 { return qtype(m) }

// LocalAddr implements dns.ResponseWriter.
func (w *udpWriter) LocalAddr() net.Addr { return w.u.conn.LocalAddr() }

// RemoteAddr implements dns.ResponseWriter.
func (w *udpWriter) RemoteAddr() net.Addr { return net.UDPAddrFromAddrPort(w.ap) }

// WriteMsg implements dns.ResponseWriter.
func (w *udpWriter) WriteMsg(m *dns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return fmt.Errorf("dnsroute: pack: %w", err)
	}
	_, err = w.Write(b)
	return err
}

// Write implements dns.ResponseWriter.
func (w *udpWriter) Write(b []byte) (int, error) {
	n, err := w.u.conn.WriteToUDPAddrPort(b, w.ap)
	if err != nil {
		return n, fmt.Errorf("dnsroute: udp write: %w", err)
	}
	return n, nil
}

// Close implements dns.ResponseWriter; there is nothing to close.
func (w *udpWriter) Close() error { return nil }

// TsigStatus implements dns.ResponseWriter; the router does not use TSIG.
func (w *udpWriter) TsigStatus() error { return nil }

// TsigTimersOnly implements dns.ResponseWriter.
func (w *udpWriter) TsigTimersOnly(bool) {}

// Hijack implements dns.ResponseWriter.
func (w *udpWriter) Hijack() {}

var _ dns.ResponseWriter = (*udpWriter)(nil)
var _ dns.Handler = (*Router)(nil)
