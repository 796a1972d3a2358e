package origin

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car/v2"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/topcdn/topcdn/dag"
	"github.com/topcdn/topcdn/origin/durability"
	"github.com/topcdn/topcdn/originapi"
	"go.uber.org/zap"
)

const (
	// maxCARHeader bounds the CAR header (its roots).
	maxCARHeader = 64 << 10
	// maxRoots bounds how many roots one upload may declare.
	maxRoots = 64
	// commitBatchBytes bounds the bytes written to the block store at once.
	commitBatchBytes = 32 << 20
)

// stagedBlock is one block of an upload, waiting in the staging file.
type stagedBlock struct {
	c      cid.Cid
	offset int64
	size   int
	links  []cid.Cid // non-identity links
	level  int       // 0: links to nothing in this upload; else 1 + max child level
	stat   dagStat   // the shape of its DAG, stored blocks included (checkShape)
	stored bool      // the origin held it before this upload
}

// Ingest reads a CAR (v1 or v2) from r and stores its blocks as the upload
// up, which AuthorizeUpload returns for a signed request. It checks the
// whole upload before writing anything to the block store: the header
// roots against up.Roots, every block against its CID, the 2 MiB limit
// and MaxLinksPerBlock, the blocks against up.BlocksDigest, the stream for
// truncation, every root and every link for presence (in the upload or
// already stored), every block's DAG, stored blocks included, against
// MaxDAGDepth and MaxDAGBlocks, and the bytes new to the origin against
// up.Publisher's quota. Any failure
// leaves the store and the accounting as they were. Blocks are then
// committed leaves first, so the store stays closed under links even if
// the process dies half-way, and the roots are recorded as published by
// up.Publisher, who is charged for the new bytes. With PostgreSQL and
// striping, the roots are striped onto the storage peers before they are
// recorded (Keeper.StripeNow); if they cannot be, the upload is refused
// (ErrUnavailable, 503) and nothing is published.
func (o *Origin) Ingest(ctx context.Context, up Upload, r io.Reader) (*originapi.UploadResult, error) {
	if up.Publisher == "" {
		return nil, errorf(ErrUnauthorized, "upload has no publisher to charge it to")
	}
	return o.ingest(ctx, up, r)
}

// ingest stages the upload, checks it whole, reserves its new bytes,
// commits it and settles the charge (see Ingest).
func (o *Origin) ingest(ctx context.Context, up Upload, r io.Reader) (*originapi.UploadResult, error) {
	stage, err := os.CreateTemp(o.stagingDir, "upload-*.blocks")
	if err != nil {
		return nil, fmt.Errorf("origin: staging: %w", err)
	}
	defer os.Remove(stage.Name())
	defer stage.Close()

	br, err := openCAR(r, up)
	if err != nil {
		return nil, err
	}
	st, err := o.stageBlocks(ctx, br, stage)
	if err != nil {
		return nil, err
	}
	if up.BlocksDigest != nil && !bytes.Equal(st.digest, up.BlocksDigest) {
		return nil, errorf(ErrForbidden, "the CAR's %d blocks are not the ones the upload was signed for (their blocks_sha256 differs)", st.n)
	}
	if err := o.checkComplete(ctx, br.Roots, st); err != nil {
		return nil, err
	}
	if err := o.checkShape(ctx, br.Roots, st); err != nil {
		return nil, err
	}
	reservation, err := o.reserveNew(ctx, up.Publisher, st)
	if err != nil {
		return nil, err
	}
	// From here the bookkeeping must finish even if the client goes away.
	bg := context.WithoutCancel(ctx)
	newBlocks, newBytes, err := o.commit(ctx, stage, st.blocks, st.order)
	if err != nil {
		// Charge what was stored before the failure, refund the rest.
		if _, serr := o.settle(bg, up.Publisher, reservation, newBytes, nil); serr != nil {
			err = errors.Join(err, serr)
		}
		return nil, err
	}
	if o.stripeBeforeAck {
		// What the origin stores anew is what goes onto the peers, some of
		// it perhaps from this disk's cache (an upload refused before).
		news, err := o.stripeNow(ctx, up.Publisher, reservation, br.Roots)
		if err != nil {
			return nil, err
		}
		newBlocks, newBytes = news.Blocks, news.Bytes
	}
	used, err := o.settle(bg, up.Publisher, reservation, newBytes, br.Roots)
	if err != nil {
		return nil, err
	}
	roots := make([]string, len(br.Roots))
	for i, root := range br.Roots {
		roots[i] = root.String()
	}
	striped, stripeErr := o.stripeBeforeAck, error(nil)
	if !striped {
		for _, root := range br.Roots {
			if err := o.storage.Queue(bg, root); err != nil {
				return nil, err
			}
		}
		striped, stripeErr = o.waitStriped(ctx, br.Roots)
	}
	o.log.Info("upload stored", zap.Stringer("publisher", up.Publisher),
		zap.Strings("roots", roots), zap.Int("blocks", st.n), zap.Int("new_blocks", newBlocks), zap.Int64("bytes", st.bytes),
		zap.Int64("new_bytes", newBytes), zap.Int64("used_bytes", used), zap.Bool("striped", striped), zap.NamedError("stripe_error", stripeErr))
	res := &originapi.UploadResult{Roots: roots, Blocks: st.n, NewBlocks: newBlocks, Bytes: st.bytes,
		Publisher: up.Publisher.String(), NewBytes: newBytes, UsedBytes: used, QuotaBytes: o.cfg.PublisherQuota, Striped: striped}
	if stripeErr != nil {
		res.StripeError = stripeErr.Error()
	}
	return res, nil
}

// stripeNow stripes the upload's roots onto the storage peers before it
// is acknowledged (PostgreSQL: see Origin.stripeBeforeAck), and returns
// what it striped anew: what the upload is charged. If they cannot be
// striped, nothing is acknowledged: the reservation is released, charged
// only for segments striped before the failure (stored for good, and not
// striped again), and the upload refused, with 503 and Retry-After unless
// the client went away. The other blocks stay on this origin's disk, a
// cache, and the job queued; the retried upload is charged for them when
// they are striped.
func (o *Origin) stripeNow(ctx context.Context, p peer.ID, reservation string, roots []cid.Cid) (durability.Striped, error) {
	news, err := o.storage.StripeNow(ctx, roots)
	if err == nil {
		return news, nil
	}
	if _, serr := o.settle(context.WithoutCancel(ctx), p, reservation, news.Bytes, nil); serr != nil {
		o.log.Error("reservation not released", zap.Stringer("publisher", p), zap.Error(serr))
	}
	if ctx.Err() != nil {
		return news, ctx.Err()
	}
	o.log.Warn("upload not acknowledged: not striped", zap.Stringer("publisher", p), zap.Error(err))
	return news, &retryLater{after: cmp.Or(o.cfg.HeartbeatInterval, durability.DefaultHeartbeatInterval),
		error: errorf(ErrUnavailable, "the upload could not be striped onto the storage peers, so it was not published: %v; retry later", err)}
}

// waitStriped waits, at most Config.StripeWait, until every root is
// striped onto the storage peers, and reports whether they are and the
// error of a failed attempt.
func (o *Origin) waitStriped(ctx context.Context, roots []cid.Cid) (bool, error) {
	if o.cfg.StripeWait < 0 {
		return false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, o.cfg.StripeWait)
	defer cancel()
	for _, root := range roots {
		ok, err := o.storage.WaitStriped(ctx, root)
		if !ok || err != nil {
			return false, err
		}
	}
	return true, nil
}

// openCAR reads a CAR's header and checks its roots: one to maxRoots of
// them, exactly the roots up was signed for.
func openCAR(r io.Reader, up Upload) (*car.BlockReader, error) {
	br, err := car.NewBlockReader(r, car.MaxAllowedHeaderSize(maxCARHeader))
	if err != nil {
		return nil, carError(err, "read CAR header")
	}
	if len(br.Roots) == 0 {
		return nil, errorf(ErrBadRequest, "CAR has no root")
	}
	if len(br.Roots) > maxRoots {
		return nil, errorf(ErrBadRequest, "CAR has %d roots, at most %d allowed", len(br.Roots), maxRoots)
	}
	if !sameRoots(br.Roots, up.Roots) {
		return nil, errorf(ErrForbidden, "CAR roots %v are not the roots the upload was signed for, %v", br.Roots, up.Roots)
	}
	return br, nil
}

// staged is an upload's blocks as stageBlocks wrote them to the staging
// file: each once, identity blocks left out.
type staged struct {
	blocks map[cid.Cid]*stagedBlock
	order  []*stagedBlock // stream order
	n      int            // block sections read, repeats and identity blocks included
	bytes  int64          // their bytes
	digest []byte         // BlocksDigest of the block sections, as read
}

// stageBlocks reads every block section of br, checks each block against
// its CID and the size limits, and writes it to stage, once.
func (o *Origin) stageBlocks(ctx context.Context, br *car.BlockReader, stage *os.File) (*staged, error) {
	st := &staged{blocks: map[cid.Cid]*stagedBlock{}}
	var offset int64
	last := "the header"
	buf := make([]byte, 0, dag.MaxBlockSize)
	digest := sha256.New()
	for ; ; st.n++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		c, rd, size, err := br.NextReader()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, carError(err, fmt.Sprintf("read block #%d (after %s)", st.n+1, last))
		}
		digest.Write(c.Bytes())
		if size > dag.MaxBlockSize {
			return nil, errorf(ErrTooLarge, "block #%d %s is %d bytes; blocks may be at most %d bytes (2 MiB)", st.n+1, c, size, dag.MaxBlockSize)
		}
		data := buf[:size]
		if _, err := io.ReadFull(rd, data); err != nil {
			return nil, carError(err, fmt.Sprintf("read block #%d %s", st.n+1, c))
		}
		if err := dag.Verify(c, data); err != nil {
			return nil, errorf(ErrBadRequest, "block #%d: %v", st.n+1, err)
		}
		last = c.String()
		st.bytes += int64(size)
		if st.n >= o.cfg.MaxUploadBlocks {
			return nil, errorf(ErrTooLarge, "CAR has more than %d blocks; split the upload", o.cfg.MaxUploadBlocks)
		}
		if dag.IsIdentity(c) || st.blocks[c] != nil {
			continue
		}
		links, err := dag.Links(c, data)
		if err != nil && !errors.Is(err, dag.ErrUnknownCodec) {
			return nil, errorf(ErrBadRequest, "block #%d: %v", st.n+1, err)
		}
		if len(links) > MaxLinksPerBlock {
			return nil, errorf(ErrTooManyLinks, "too_many_links: block #%d %s has %d links; the origin stores blocks of at most %d links (MaxLinksPerBlock): shard the directory or rebalance the file",
				st.n+1, c, len(links), MaxLinksPerBlock)
		}
		if _, err := stage.Write(data); err != nil {
			return nil, fmt.Errorf("origin: staging: %w", err)
		}
		sb := &stagedBlock{c: c, offset: offset, size: int(size), links: dropRawIdentity(links)}
		st.blocks[c] = sb
		st.order = append(st.order, sb)
		offset += int64(size)
	}
	st.digest = digest.Sum(nil)
	return st, nil
}

// checkComplete requires every root and every link to be in this upload
// or already stored (and so complete, by the closure invariant); with
// AllowIncomplete, only the roots. An identity CID inlines its block;
// only raw ones (no links) are taken.
func (o *Origin) checkComplete(ctx context.Context, roots []cid.Cid, st *staged) error {
	have := func(c cid.Cid) (bool, error) {
		if dag.IsIdentity(c) {
			if c.Type() != cid.Raw {
				return false, errorf(ErrBadRequest, "identity CID %s inlines a %#x node; only raw identity CIDs are accepted", c, c.Type())
			}
			return true, nil
		}
		if st.blocks[c] != nil {
			return true, nil
		}
		return o.blocks.Has(ctx, c)
	}
	for _, root := range roots {
		ok, err := have(root)
		if errors.Is(err, ErrBadRequest) {
			return err
		}
		if err != nil {
			return fmt.Errorf("origin: check root %s: %w", root, err)
		}
		if !ok {
			return errorf(ErrIncomplete, "root %s is neither in the CAR nor stored at the origin", root)
		}
	}
	for _, sb := range st.order {
		for _, l := range sb.links {
			ok, err := have(l)
			if errors.Is(err, ErrBadRequest) {
				return err
			}
			if err != nil {
				return fmt.Errorf("origin: check link %s: %w", l, err)
			}
			if !ok && !o.cfg.AllowIncomplete {
				return errorf(ErrIncomplete, "block %s links to %s, which is neither in the CAR nor stored at the origin", sb.c, l)
			}
		}
	}
	return nil
}

// reserveNew marks the staged blocks the origin already holds and
// reserves the bytes of the others, new to the origin, against p's quota
// (reserve), before any is written. It returns the reservation.
func (o *Origin) reserveNew(ctx context.Context, p peer.ID, st *staged) (string, error) {
	var reserved int64
	for _, sb := range st.order {
		has, err := o.blocks.Has(ctx, sb.c)
		if err != nil {
			return "", fmt.Errorf("origin: check block %s: %w", sb.c, err)
		}
		if sb.stored = has; !has {
			reserved += int64(sb.size)
		}
	}
	return o.reserve(ctx, p, reserved)
}

// commit writes staged blocks to the block store level by level, leaves
// first: a block goes in only after all blocks it links to, then records
// their DAG shapes (dag_stats). It returns the blocks and bytes it wrote,
// also when it fails part-way.
func (o *Origin) commit(ctx context.Context, stage *os.File, staged map[cid.Cid]*stagedBlock, order []*stagedBlock) (newBlocks int, newBytes int64, err error) {
	maxLevel := assignLevels(order, staged)
	byLevel := make([][]*stagedBlock, maxLevel+1)
	for _, sb := range order {
		byLevel[sb.level] = append(byLevel[sb.level], sb)
	}
	for _, level := range byLevel {
		var batch []blocks.Block
		var batchBytes int
		flush := func() error {
			if len(batch) == 0 {
				return nil
			}
			if err := o.local.PutMany(ctx, batch); err != nil {
				return fmt.Errorf("origin: store blocks: %w", err)
			}
			newBlocks += len(batch)
			newBytes += int64(batchBytes)
			batch, batchBytes = batch[:0], 0
			return nil
		}
		for _, sb := range level {
			if sb.stored {
				continue
			}
			// Another upload may have stored it since the quota check.
			has, err := o.blocks.Has(ctx, sb.c)
			if err != nil {
				return newBlocks, newBytes, fmt.Errorf("origin: store blocks: %w", err)
			}
			if has {
				continue
			}
			data := make([]byte, sb.size)
			if _, err := stage.ReadAt(data, sb.offset); err != nil && sb.size > 0 {
				return newBlocks, newBytes, fmt.Errorf("origin: read staged block %s: %w", sb.c, err)
			}
			b, err := blocks.NewBlockWithCid(data, sb.c)
			if err != nil {
				return newBlocks, newBytes, fmt.Errorf("origin: %w", err)
			}
			batch = append(batch, b)
			batchBytes += sb.size
			if batchBytes >= commitBatchBytes {
				if err := flush(); err != nil {
					return newBlocks, newBytes, err
				}
			}
		}
		if err := flush(); err != nil {
			return newBlocks, newBytes, err
		}
	}
	// Blocks left without a row (by a crash, or a failure here) cost a
	// walk the first time an upload links to them (walkStored).
	stats := make(map[cid.Cid]dagStat, len(order))
	for _, sb := range order {
		stats[sb.c] = sb.stat
	}
	if err := o.saveStats(context.WithoutCancel(ctx), stats); err != nil {
		o.log.Warn("dag stats not saved", zap.Error(err))
	}
	return newBlocks, newBytes, nil
}

// assignLevels sets each staged block's level, its height within the
// upload: 0 for a block linking to nothing in the upload, else one more
// than its highest child. It walks iteratively, so a deep (or hostile) DAG
// cannot overflow the stack; hash links cannot form cycles.
func assignLevels(order []*stagedBlock, staged map[cid.Cid]*stagedBlock) int {
	type frame struct {
		b *stagedBlock
		i int
	}
	done := make(map[*stagedBlock]bool, len(order))
	maxLevel := 0
	var stack []frame
	for _, start := range order {
		if done[start] {
			continue
		}
		stack = append(stack[:0], frame{b: start})
		for len(stack) > 0 {
			top := &stack[len(stack)-1]
			if top.i < len(top.b.links) {
				child := staged[top.b.links[top.i]]
				top.i++
				if child != nil && !done[child] {
					stack = append(stack, frame{b: child})
				}
				continue
			}
			lvl := 0
			for _, l := range top.b.links {
				if child := staged[l]; child != nil {
					lvl = max(lvl, child.level+1)
				}
			}
			top.b.level = lvl
			done[top.b] = true
			maxLevel = max(maxLevel, lvl)
			stack = stack[:len(stack)-1]
		}
	}
	return maxLevel
}

// dropRawIdentity drops links to raw identity CIDs, whose data is inline
// and which link to nothing; other identity links stay, to be refused.
func dropRawIdentity(cs []cid.Cid) []cid.Cid {
	out := cs[:0]
	for _, c := range cs {
		if !dag.IsIdentity(c) || c.Type() != cid.Raw {
			out = append(out, c)
		}
	}
	return out
}

// carError classifies an error from reading a CAR stream: a size limit,
// a cancelled request, or else a malformed or truncated CAR.
func carError(err error, what string) error {
	var maxBytes *http.MaxBytesError
	switch {
	case errors.As(err, &maxBytes):
		return errorf(ErrTooLarge, "%s: upload larger than the %d byte limit", what, maxBytes.Limit)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return errorf(ErrBadRequest, "%s: CAR stream truncated", what)
	default:
		return errorf(ErrBadRequest, "%s: malformed CAR: %v", what, err)
	}
}
