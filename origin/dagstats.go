package origin

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/topcdn/topcdn/dag"
	"github.com/topcdn/topcdn/sqldb"
)

// Limits on the shape of the DAGs the origin stores. An upload holding a
// block over one of them is refused whole, before anything is reserved or
// stored: such a DAG could not be served whole as a CAR, nor indexed by
// billing. Each limit applies to every block of the upload, counting the
// blocks it links to that the origin stored before.
const (
	// MaxLinksPerBlock bounds the links of one block. A HAMT shard has at
	// most 256, a balanced UnixFS file node 174, and a plain directory is
	// sharded past 256 KiB. More: 422, reason too_many_links.
	MaxLinksPerBlock = 16_384
	// MaxDAGDepth bounds a block's height: the longest chain of links
	// from it down to a block that links to nothing. It is half the depth
	// to which the gateway traverses a DAG for a CAR
	// (gatewayTraversalDepth), so a stored DAG is always served whole.
	// Deeper: 422, reason dag_too_deep.
	MaxDAGDepth = 512
	// MaxDAGBlocks bounds the blocks under a block, itself included. The
	// count is an upper bound: a block shared by several parents counts
	// once per parent (links repeated within one block count once).
	// More: 413, reason dag_too_large; split the content into several
	// roots.
	MaxDAGBlocks = 2_000_000
)

// gatewayTraversalDepth is the depth boxo's gateway follows links to when
// it writes a CAR. It is set explicitly, above MaxDAGDepth: boxo stops at
// its limit after the 200 and the headers are sent, so a DAG deeper than
// it would be served truncated.
const gatewayTraversalDepth = 2 * MaxDAGDepth

// dagStat is the shape of the DAG under one block.
type dagStat struct {
	height  int   // 0: links to nothing
	blocks  int64 // blocks under it, itself included, at most MaxDAGBlocks+1
	partial bool  // some block under it is missing (AllowIncomplete)
}

// leafStat is the shape of a block that links to nothing.
var leafStat = dagStat{blocks: 1}

// statKey is the dag_stats key of c: its CIDv1, so that CIDv0 and CIDv1
// links to the same block share one row.
func statKey(c cid.Cid) string { return cid.NewCidV1(c.Type(), c.Hash()).String() }

// hasNoLinks reports whether c is known to link to nothing without reading
// it: a raw block, or an identity CID (only raw ones are accepted).
func hasNoLinks(c cid.Cid) bool { return c.Type() == cid.Raw || dag.IsIdentity(c) }

// fold returns the shape of the DAG under a block with the given links,
// from child, the shape under each; a child linked twice counts once.
func fold(links []cid.Cid, child func(cid.Cid) (dagStat, error)) (dagStat, error) {
	s := leafStat
	var seen map[cid.Cid]bool
	if len(links) > 1 {
		seen = make(map[cid.Cid]bool, len(links))
	}
	for _, l := range links {
		if seen != nil {
			if seen[l] {
				continue
			}
			seen[l] = true
		}
		cs, err := child(l)
		if err != nil {
			return dagStat{}, err
		}
		s.height = max(s.height, cs.height+1)
		s.blocks = min(s.blocks+cs.blocks, MaxDAGBlocks+1)
		s.partial = s.partial || cs.partial
	}
	return s, nil
}

// checkStat refuses s if it is over a limit; what names its block.
func checkStat(s dagStat, what string) error {
	switch {
	case s.height > MaxDAGDepth:
		return errorf(ErrDAGTooDeep, "dag_too_deep: %s is at least %d links deep; the origin stores DAGs at most %d deep (MaxDAGDepth)",
			what, s.height, MaxDAGDepth)
	case s.blocks > MaxDAGBlocks:
		return errorf(ErrDAGTooLarge, "dag_too_large: %s has more than %d blocks under it; the origin stores DAGs of at most %d blocks (MaxDAGBlocks): split the content into several roots",
			what, MaxDAGBlocks, MaxDAGBlocks)
	}
	return nil
}

// checkShape computes the DAG shape of every staged block, leaves first,
// and refuses the upload if one is over MaxDAGDepth or MaxDAGBlocks. The
// shape of a block linked to but stored before comes from dag_stats, or
// from a bounded walk for blocks stored before it existed. Links are
// already checked (checkComplete) and per block bounded (stageBlocks).
func (o *Origin) checkShape(ctx context.Context, roots []cid.Cid, st *staged) error {
	isRoot := make(map[cid.Cid]bool, len(roots))
	for _, r := range roots {
		isRoot[r] = true
	}
	stored := map[cid.Cid]dagStat{}
	child := func(c cid.Cid) (dagStat, error) {
		if sb := st.blocks[c]; sb != nil {
			return sb.stat, nil
		}
		if s, ok := stored[c]; ok {
			return s, nil
		}
		s, err := o.storedStat(ctx, c)
		if err != nil {
			return dagStat{}, err
		}
		stored[c] = s
		return s, nil
	}
	type frame struct {
		b *stagedBlock
		i int
	}
	done := make(map[*stagedBlock]bool, len(st.order))
	var stack []frame
	for _, start := range st.order {
		if done[start] {
			continue
		}
		stack = append(stack[:0], frame{b: start})
		for len(stack) > 0 {
			top := &stack[len(stack)-1]
			if top.i < len(top.b.links) {
				next := st.blocks[top.b.links[top.i]]
				top.i++
				if next != nil && !done[next] {
					stack = append(stack, frame{b: next})
				}
				continue
			}
			s, err := fold(top.b.links, child)
			if err != nil {
				return err
			}
			what := "block " + top.b.c.String()
			if isRoot[top.b.c] {
				what = "root " + top.b.c.String()
			}
			if err := checkStat(s, what); err != nil {
				return err
			}
			top.b.stat = s
			done[top.b] = true
			stack = stack[:len(stack)-1]
		}
	}
	return nil
}

// storedStat returns the shape of the DAG under c, a block stored before
// this upload (or, with AllowIncomplete, missing).
func (o *Origin) storedStat(ctx context.Context, c cid.Cid) (dagStat, error) {
	if hasNoLinks(c) {
		return leafStat, nil
	}
	s, ok, err := o.loadStat(ctx, c)
	if err != nil || ok {
		return s, err
	}
	return o.walkStored(ctx, c)
}

// loadStat reads c's dag_stats row, if it has one.
func (o *Origin) loadStat(ctx context.Context, c cid.Cid) (dagStat, bool, error) {
	var s dagStat
	err := o.db.QueryRowContext(ctx, `SELECT height, blocks FROM dag_stats WHERE cid = ?`, statKey(c)).Scan(&s.height, &s.blocks)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return dagStat{}, false, nil
	case err != nil:
		return dagStat{}, false, fmt.Errorf("origin: read dag stats of %s: %w", c, err)
	}
	return s, true, nil
}

// walkStored computes the shape of the DAG under root, stored before
// dag_stats existed, by walking it; the walk stops, refusing the upload
// that links to root, as soon as the DAG is over a limit, so it reads at
// most MaxDAGBlocks blocks and keeps at most MaxDAGDepth+1 on its stack.
// What it learns of complete DAGs is saved to dag_stats, so each block is
// walked once.
func (o *Origin) walkStored(ctx context.Context, root cid.Cid) (dagStat, error) {
	type frame struct {
		c     cid.Cid
		links []cid.Cid
		i     int
	}
	what := fmt.Sprintf("stored block %s (linked from this upload)", root)
	memo := map[cid.Cid]dagStat{}
	// known returns the shape under c without reading c, if it can.
	known := func(c cid.Cid) (dagStat, bool, error) {
		if hasNoLinks(c) {
			return leafStat, true, nil
		}
		if s, ok := memo[c]; ok {
			return s, true, nil
		}
		s, ok, err := o.loadStat(ctx, c)
		if ok {
			memo[c] = s
		}
		return s, ok, err
	}
	// child is known for every child of a block whose frame is done.
	child := func(c cid.Cid) (dagStat, error) {
		s, _, err := known(c)
		return s, err
	}
	var stack []frame
	read := 0
	push := func(c cid.Cid) error {
		if len(stack) > MaxDAGDepth {
			return checkStat(dagStat{height: len(stack)}, what)
		}
		if read++; read > MaxDAGBlocks {
			return checkStat(dagStat{blocks: MaxDAGBlocks + 1}, what)
		}
		b, err := o.blocks.Get(ctx, c)
		if ipld.IsNotFound(err) { // only with AllowIncomplete
			memo[c] = dagStat{blocks: 1, partial: true}
			return nil
		}
		if err != nil {
			return fmt.Errorf("origin: read stored block %s: %w", c, err)
		}
		links, err := dag.Links(c, b.RawData())
		if err != nil && !errors.Is(err, dag.ErrUnknownCodec) {
			return fmt.Errorf("origin: links of stored block %s: %w", c, err)
		}
		stack = append(stack, frame{c: c, links: dropRawIdentity(links)})
		return nil
	}
	if err := push(root); err != nil {
		return dagStat{}, err
	}
	for len(stack) > 0 {
		if err := ctx.Err(); err != nil {
			return dagStat{}, err
		}
		top := &stack[len(stack)-1]
		if top.i < len(top.links) {
			l := top.links[top.i]
			top.i++
			_, ok, err := known(l)
			if err != nil {
				return dagStat{}, err
			}
			if !ok {
				if err := push(l); err != nil {
					return dagStat{}, err
				}
			}
			continue
		}
		s, err := fold(top.links, child)
		if err != nil {
			return dagStat{}, err
		}
		if err := checkStat(s, what); err != nil {
			return dagStat{}, err
		}
		memo[top.c] = s
		stack = stack[:len(stack)-1]
	}
	if err := o.saveStats(ctx, memo); err != nil {
		return dagStat{}, err
	}
	return memo[root], nil
}

// saveStats records the shape of complete DAGs under blocks with links;
// rows already there stay (a CID's DAG is always the same).
func (o *Origin) saveStats(ctx context.Context, stats map[cid.Cid]dagStat) error {
	return sqldb.InTx(ctx, o.db, func(tx *sqldb.Tx) error {
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO dag_stats (cid, height, blocks) VALUES (?, ?, ?) ON CONFLICT (cid) DO NOTHING`)
		if err != nil {
			return fmt.Errorf("origin: save dag stats: %w", err)
		}
		defer stmt.Close()
		for c, s := range stats {
			if s.partial || hasNoLinks(c) {
				continue
			}
			if _, err := stmt.ExecContext(ctx, statKey(c), s.height, s.blocks); err != nil {
				return fmt.Errorf("origin: save dag stats of %s: %w", c, err)
			}
		}
		return nil
	})
}
