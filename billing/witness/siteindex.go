package witness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	mdag "github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car/v2"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/dag"
)

// Limits billing indexes a site's DAG within. They mirror the limits the
// origin stores DAGs within (origin.MaxDAGDepth, origin.MaxLinksPerBlock,
// origin.MaxDAGBlocks; this package may not link the origin, see
// internal/layout): the origin refuses a larger DAG at upload, so an
// honest origin never serves one, and billing refuses to index one it is
// served anyway.
const (
	// maxIndexDepth bounds the height of a site's root: the longest chain
	// of links from it to a block that links to nothing.
	maxIndexDepth = 512
	// maxIndexLinks bounds the links of one block.
	maxIndexLinks = 16_384
	// maxIndexBlocks bounds the distinct blocks of one site. It is the
	// origin's MaxDAGBlocks, itself an upper bound of the distinct blocks
	// under a root, so every DAG the origin accepts fits. The index keeps
	// about 100 bytes per block and per link, a few hundred MB at most.
	maxIndexBlocks = 2_000_000
)

// Backoff of the roots whose site could not be indexed: a root billing
// cannot index (ReasonUnindexable) is asked for again after
// unindexableBackoff, doubling on each new refusal up to
// maxUnindexableBackoff; one the origin could not serve now (5xx, a
// timeout, a truncated CAR), after transientBackoff (the Retry-After the
// origin gives a CAR of a striped root below k healthy shards). Until
// then the failure is answered from memory, so that a batch holding many
// records of such a root does not fetch its CAR once per record.
const (
	unindexableBackoff    = time.Minute
	maxUnindexableBackoff = time.Hour
	transientBackoff      = 30 * time.Second
)

// indexFailure is why a root's site could not be indexed, and until when
// that answer stands.
type indexFailure struct {
	err     error
	until   time.Time
	backoff time.Duration // of the last unindexable answer; 0 if none yet
}

// unindexable returns a refusal of root's site for ReasonUnindexable.
func unindexable(root string, format string, args ...any) error {
	return &billingapi.RejectError{Reason: billingapi.ReasonUnindexable,
		Err: fmt.Errorf("site %s: %s", root, fmt.Sprintf(format, args...))}
}

// isUnindexable reports whether err refuses a site for ReasonUnindexable.
func isUnindexable(err error) bool {
	var re *billingapi.RejectError
	return errors.As(err, &re) && re.Reason == billingapi.ReasonUnindexable
}

// site returns the index of the site under root, fetching it as a CAR the
// first time. A root billing cannot index is a *billingapi.RejectError
// with ReasonUnindexable: the origin answers 404, 410, 413 or 422 for its
// CAR, a block of it has more than maxIndexLinks links or cannot be
// decoded, the DAG is deeper than maxIndexDepth or has more than
// maxIndexBlocks blocks. Any other failure (5xx, a timeout, a CAR cut
// short or missing blocks, a block that does not match its CID) is a
// plain error: the origin may serve it whole later. Either is remembered
// for a while (see unindexableBackoff). Callers hold o.mu.
func (o *OriginContent) site(ctx context.Context, root string) (*siteIndex, error) {
	if s := o.sites[root]; s != nil {
		return s, nil
	}
	now := o.now()
	f := o.failed[root]
	if f != nil && now.Before(f.until) {
		return nil, f.err
	}
	s, err := o.fetchSite(ctx, root)
	if err != nil {
		if f == nil {
			f = &indexFailure{}
			o.failed[root] = f
		}
		f.err = err
		if isUnindexable(err) {
			f.backoff = min(max(2*f.backoff, unindexableBackoff), maxUnindexableBackoff)
			f.until = o.now().Add(f.backoff)
		} else {
			f.until = o.now().Add(transientBackoff)
		}
		return nil, err
	}
	delete(o.failed, root)
	o.sites[root] = s
	for c := range s.blocks {
		o.blockRoots[c] = append(o.blockRoots[c], root)
	}
	return s, nil
}

// fetchSite reads the CAR of root from the origin and indexes it, within
// the limits (see site).
func (o *OriginContent) fetchSite(ctx context.Context, root string) (*siteIndex, error) {
	rc, err := cid.Decode(root)
	if err != nil {
		return nil, unindexable(root, "not a CID: %v", err)
	}
	resp, err := o.get(ctx, "/ipfs/"+root+"?format=car&dag-scope=all", "application/vnd.ipld.car")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound, http.StatusGone, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
		return nil, unindexable(root, "the origin answers HTTP %d for its CAR", resp.StatusCode)
	default:
		return nil, fmt.Errorf("origin: CAR of %s: HTTP %d", root, resp.StatusCode)
	}
	s := &siteIndex{blocks: map[cid.Cid]*blockInfo{}}
	readErr := s.read(root, resp.Body)
	if isUnindexable(readErr) {
		return nil, readErr
	}
	// Even a CAR cut short may show the DAG beyond the limits: then no
	// retry can help.
	shapeErr := s.checkShape(root, rc)
	switch {
	case isUnindexable(shapeErr):
		return nil, shapeErr
	case readErr != nil:
		return nil, readErr
	case shapeErr != nil:
		return nil, shapeErr
	}
	return s, nil
}

// read adds the blocks of the CAR in r to s, each verified against its
// CID, within maxIndexLinks and maxIndexBlocks.
func (s *siteIndex) read(root string, r io.Reader) error {
	br, err := car.NewBlockReader(r)
	if err != nil {
		return fmt.Errorf("origin: CAR of %s: %w", root, err)
	}
	for {
		blk, err := br.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("origin: CAR of %s: %w", root, err)
		}
		c, data := blk.Cid(), blk.RawData()
		if err := dag.Verify(c, data); err != nil {
			return fmt.Errorf("origin: CAR of %s: %w", root, err)
		}
		if s.blocks[c] != nil {
			continue
		}
		links, err := dag.Links(c, data)
		if err != nil {
			// The bytes match the CID: every read decodes them alike.
			return unindexable(root, "block %s: %v", c, err)
		}
		if len(links) > maxIndexLinks {
			return unindexable(root, "block %s has %d links; billing indexes blocks of at most %d", c, len(links), maxIndexLinks)
		}
		if len(s.blocks) >= maxIndexBlocks {
			return unindexable(root, "more than %d blocks; billing indexes sites of at most %d", maxIndexBlocks, maxIndexBlocks)
		}
		bi := &blockInfo{size: int64(len(data)), links: links}
		if c.Type() == cid.DagProtobuf {
			if pn, err := mdag.DecodeProtobuf(data); err == nil {
				if fs, err := unixfs.FSNodeFromBytes(pn.Data()); err == nil && fs.FileSize() < 1<<62 {
					bi.fileSize = int64(fs.FileSize())
				}
			}
		}
		s.blocks[c] = bi
	}
}

// checkShape checks the DAG under root as read into s: no deeper than
// maxIndexDepth (ReasonUnindexable), every block it links to present but
// identity CIDs (else a plain error: the CAR was cut short).
func (s *siteIndex) checkShape(root string, rc cid.Cid) error {
	if s.blocks[rc] == nil {
		return fmt.Errorf("origin: CAR of %s lacks its root", root)
	}
	height := make(map[cid.Cid]int, len(s.blocks))
	var missing cid.Cid
	// walk returns the height of c, at depth below the root, or -1 once
	// the DAG is found too deep. Recursion stops at maxIndexDepth + 1.
	var walk func(c cid.Cid, depth int) int
	walk = func(c cid.Cid, depth int) int {
		if h, ok := height[c]; ok {
			return h
		}
		if depth > maxIndexDepth {
			return -1
		}
		b := s.blocks[c]
		if b == nil && dag.IsIdentity(c) {
			// Inlined in the CID: a CAR need not carry it. (Its links,
			// if any, are not followed: a leaf for the bound.)
			height[c] = 0
			return 0
		}
		if b == nil {
			if !missing.Defined() {
				missing = c
			}
			height[c] = 0
			return 0
		}
		h := 0
		for _, l := range b.links {
			lh := walk(l, depth+1)
			if lh < 0 {
				return -1
			}
			h = max(h, lh+1)
		}
		height[c] = h
		return h
	}
	if h := walk(rc, 0); h < 0 || h > maxIndexDepth {
		return unindexable(root, "deeper than %d links; billing indexes DAGs at most %d deep", maxIndexDepth, maxIndexDepth)
	}
	if missing.Defined() {
		return fmt.Errorf("origin: CAR of %s lacks block %s: cut short", root, missing)
	}
	return nil
}
