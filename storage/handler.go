package storage

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	mh "github.com/multiformats/go-multihash"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/httpkit"
	"github.com/topcdn/topcdn/storageapi"
	"go.uber.org/zap"
)

// maxAuditBody bounds the body of an audit request: one envelope.
const maxAuditBody = 64 << 10

// newHandler routes the peer's API:
//
//	PUT    /shards/{id}        store a shard (origin's WriteOrder)
//	GET    /shards/{id}        a range of a shard (reader's ReadOrder)
//	DELETE /shards/{id}        drop a shard (origin's DeleteOrder)
//	POST   /shards/{id}/audit  prove a shard is held (origin's Audit)
//	GET    /shards             the shards held ([]ShardInfo)
//	GET    /status             capacity and use (Status)
//	GET    /metrics, /healthz
func (s *Server) newHandler() http.Handler {
	mux := http.NewServeMux()
	route := httpkit.Metrics{Requests: s.metrics.requests, Duration: s.metrics.duration, Log: s.log}.Router(mux)
	route("PUT /shards/{id}", "put", s.servePut)
	route("GET /shards/{id}", "get", s.serveGet)
	route("DELETE /shards/{id}", "delete", s.serveDelete)
	route("POST /shards/{id}/audit", "audit", s.serveAudit)
	route("GET /shards", "list", func(w http.ResponseWriter, r *http.Request) {
		httpkit.WriteJSON(w, http.StatusOK, s.store.list())
	})
	route("GET /status", "status", func(w http.ResponseWriter, r *http.Request) {
		httpkit.WriteJSON(w, http.StatusOK, s.status())
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{}))
	mux.Handle("GET /healthz", httpkit.Health(s.db.PingContext, map[string]string{"peer_id": s.key.ID.String()}))
	return mux
}

func (s *Server) status() storageapi.Status {
	capacity, used, free, n := s.store.stats()
	return storageapi.Status{PeerID: s.key.ID.String(), Capacity: capacity, Used: used, Free: free, Shards: n}
}

// fail answers with err, counts it under counter (if any) and, for a
// refused order, under its rejection reason.
func (s *Server) fail(w http.ResponseWriter, counter *prometheus.CounterVec, err error) {
	if counter != nil {
		counter.WithLabelValues(result(err)).Inc()
	}
	var se *httpkit.StatusError
	if errors.As(err, &se) && se.Reason != "" {
		s.metrics.ordersRejected.WithLabelValues(se.Reason).Inc()
	}
	if httpkit.StatusOf(err) == http.StatusInternalServerError {
		s.log.Error("request failed", zap.Error(err))
	}
	httpkit.WriteError(w, err)
}

// shardParam returns the request's shard ID, which must be a shard ID in
// canonical form (as ShardID writes it).
func shardParam(r *http.Request) (string, []byte, error) {
	id := r.PathValue("id")
	c, err := storageapi.ParseShardID(id)
	if err != nil {
		return "", nil, errorf(storageapi.ErrBadRequest, "%w", err)
	}
	if c.String() != id {
		return "", nil, errorf(storageapi.ErrBadRequest, "shard ID %q is not in canonical form %s", id, c)
	}
	dh, err := mh.Decode(c.Hash())
	if err != nil || len(dh.Digest) != 32 {
		return "", nil, errorf(storageapi.ErrBadRequest, "shard ID %q: want a full 32-byte blake3 digest", id)
	}
	return id, dh.Digest, nil
}

func (s *Server) servePut(w http.ResponseWriter, r *http.Request) {
	if err := s.put(w, r); err != nil {
		s.fail(w, s.metrics.writes, err)
	}
}

// put checks a write order and stores the shard in the body.
func (s *Server) put(w http.ResponseWriter, r *http.Request) error {
	var o storageapi.WriteOrder
	req, err := s.openRequest(r, storageapi.TypeWriteOrder, &o, true, func() order { return order{"", o.Peer, o.Shard, o.Expires} })
	if err != nil {
		return err
	}
	id, digest := req.id, req.digest
	switch {
	case o.Size <= 0:
		return reject(reasonSize, storageapi.ErrBadRequest, "order size %d: want > 0", o.Size)
	case r.ContentLength < 0:
		return errorf(storageapi.ErrLengthRequired, "shard upload needs a Content-Length (%d, the order's size)", o.Size)
	case r.ContentLength != o.Size:
		return reject(reasonSize, storageapi.ErrBadRequest, "Content-Length %d differs from the order's size %d", r.ContentLength, o.Size)
	}
	if size, ok := s.store.size(id); ok {
		if size != o.Size {
			return reject(reasonSize, storageapi.ErrBadRequest, "shard %s is held with %d bytes, not the order's %d", id, size, o.Size)
		}
		s.metrics.writes.WithLabelValues("exists").Inc()
		httpkit.WriteJSON(w, http.StatusOK, storageapi.ShardInfo{ID: id, Size: size})
		return nil
	}
	created, err := s.store.put(id, digest, o.Size, http.MaxBytesReader(w, r.Body, o.Size))
	if err != nil {
		return err
	}
	code, res := http.StatusCreated, "ok"
	if !created {
		code, res = http.StatusOK, "exists"
	}
	s.metrics.writes.WithLabelValues(res).Inc()
	s.log.Debug("shard stored", zap.String("shard", id), zap.Int64("size", o.Size), zap.Bool("new", created))
	httpkit.WriteJSON(w, code, storageapi.ShardInfo{ID: id, Size: o.Size})
	return nil
}

func (s *Server) serveGet(w http.ResponseWriter, r *http.Request) {
	if err := s.get(w, r); err != nil {
		s.fail(w, s.metrics.reads, err)
	}
}

// get checks a read order and serves the range it asks for, once.
func (s *Server) get(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet { // HEAD would spend the order for nothing
		w.Header().Set("Allow", http.MethodGet)
		return errorf(errMethodNotAllowed, "%s not allowed; send GET with a read order", r.Method)
	}
	var o storageapi.ReadOrder
	req, err := s.openRequest(r, storageapi.TypeReadOrder, &o, false, func() order { return order{"", o.Peer, o.Shard, o.Expires} })
	if err != nil {
		return err
	}
	id, signer, h := req.id, req.signer, req.encoded
	if err := checkReadOrder(&o); err != nil {
		return err
	}
	ranges := r.Header.Values("Range")
	if len(ranges) > 1 {
		return errorf(storageapi.ErrBadRequest, "%d Range headers; send one", len(ranges))
	}
	if len(ranges) == 1 {
		first, last, err := parseRange(ranges[0])
		if err != nil {
			return err
		}
		if first != o.Offset || last != o.Offset+o.Length-1 {
			return reject(reasonRange, storageapi.ErrBadRequest, "Range %s is not the order's range bytes=%d-%d",
				ranges[0], o.Offset, o.Offset+o.Length-1)
		}
	}
	f, size, err := s.store.open(id)
	if err != nil {
		return err
	}
	defer f.Close()
	if o.Offset > size-o.Length {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", size))
		return errorf(storageapi.ErrRangeNotSatisfiable, "bytes %d-%d are outside shard %s of %d bytes",
			o.Offset, o.Offset+o.Length-1, id, size)
	}
	code := http.StatusPartialContent
	if len(ranges) == 0 {
		if o.Offset != 0 || o.Length != size {
			return reject(reasonRange, storageapi.ErrBadRequest, "no Range header: send Range: bytes=%d-%d, the order's range",
				o.Offset, o.Offset+o.Length-1)
		}
		code = http.StatusOK
	}
	if err := s.claimRead(r.Context(), signer, &o, h); err != nil {
		return err
	}

	hdr := w.Header()
	hdr.Set("Content-Type", "application/octet-stream")
	hdr.Set("Content-Length", strconv.FormatInt(o.Length, 10))
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Cache-Control", "no-store")
	if code == http.StatusPartialContent {
		hdr.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", o.Offset, o.Offset+o.Length-1, size))
	}
	w.WriteHeader(code)
	n, err := io.Copy(w, io.NewSectionReader(f, o.Offset, o.Length))
	s.metrics.readBytes.Add(float64(n))
	if err != nil || n != o.Length {
		// The status is sent; the reader sees a short body. The order stays
		// spent: it was served at most once.
		s.metrics.reads.WithLabelValues("error").Inc()
		s.log.Warn("read cut short", zap.String("shard", id), zap.Stringer("reader", signer),
			zap.Int64("sent", n), zap.Int64("length", o.Length), zap.Error(err))
		return nil
	}
	s.metrics.reads.WithLabelValues("ok").Inc()
	return nil
}

func (s *Server) serveDelete(w http.ResponseWriter, r *http.Request) {
	if err := s.delete(r); err != nil {
		s.fail(w, s.metrics.deletes, err)
		return
	}
	s.metrics.deletes.WithLabelValues("ok").Inc()
	w.WriteHeader(http.StatusNoContent)
}

// delete checks a delete order and drops the shard.
func (s *Server) delete(r *http.Request) error {
	var o storageapi.DeleteOrder
	req, err := s.openRequest(r, storageapi.TypeDeleteOrder, &o, true, func() order { return order{"", o.Peer, o.Shard, o.Expires} })
	if err != nil {
		return err
	}
	id := req.id
	if err := s.store.remove(id); err != nil {
		return err
	}
	s.log.Debug("shard deleted", zap.String("shard", id))
	return nil
}

func (s *Server) serveAudit(w http.ResponseWriter, r *http.Request) {
	ans, err := s.audit(w, r)
	if err != nil {
		s.fail(w, s.metrics.audits, err)
		return
	}
	s.metrics.audits.WithLabelValues("ok").Inc()
	httpkit.WriteJSON(w, http.StatusOK, ans)
}

// audit checks an audit and answers it with the bytes asked for.
func (s *Server) audit(w http.ResponseWriter, r *http.Request) (*storageapi.AuditAnswer, error) {
	id, _, err := shardParam(r)
	if err != nil {
		return nil, err
	}
	var env identity.Envelope
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAuditBody))
	if err := dec.Decode(&env); err != nil {
		var maxBytes *http.MaxBytesError
		if errors.As(err, &maxBytes) {
			return nil, errorf(storageapi.ErrTooLarge, "audit body over %d bytes", maxAuditBody)
		}
		return nil, reject(reasonMalformed, storageapi.ErrBadRequest, "audit body: want a JSON envelope: %w", err)
	}
	var a storageapi.Audit
	signer, err := openEnvelope(&env, storageapi.TypeAudit, &a)
	if err != nil {
		return nil, err
	}
	if err := s.checkOrder(order{signer, a.Peer, a.Shard, a.Expires}, id, true); err != nil {
		return nil, err
	}
	if err := checkAudit(&a); err != nil {
		return nil, err
	}
	f, size, err := s.store.open(id)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if a.Offset > size-a.Length {
		return nil, errorf(storageapi.ErrRangeNotSatisfiable, "audit of bytes %d-%d is outside shard %s of %d bytes",
			a.Offset, a.Offset+a.Length-1, id, size)
	}
	data := make([]byte, a.Length)
	if _, err := f.ReadAt(data, a.Offset); err != nil {
		return nil, fmt.Errorf("storage: audit %s: %w", id, err)
	}
	return &storageapi.AuditAnswer{Data: data, Proof: storageapi.AuditProof(a.Nonce, data)}, nil
}
