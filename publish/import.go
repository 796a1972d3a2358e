package publish

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	chunker "github.com/ipfs/boxo/chunker"
	mdag "github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/boxo/ipld/unixfs/importer/balanced"
	"github.com/ipfs/boxo/ipld/unixfs/importer/helpers"
	"github.com/ipfs/boxo/ipld/unixfs/importer/trickle"
	uio "github.com/ipfs/boxo/ipld/unixfs/io"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	mh "github.com/multiformats/go-multihash"
)

// Defaults of ImportDir's options: kubo's for `ipfs add -r --cid-version=1`.
const (
	DefaultChunker    = "size-262144"
	DefaultCidVersion = 1
	DefaultHash       = "sha2-256"
)

// Option configures ImportDir.
type Option func(*options)

type options struct {
	chunker     string
	cidVersion  int
	rawLeaves   *bool
	hashFunc    uint64
	hidden      bool
	emptyDirs   bool
	trickle     bool
	onlyHash    bool
	concurrency int
	progress    func(n int64)
}

func defaultOptions() options {
	return options{
		chunker:     DefaultChunker,
		cidVersion:  DefaultCidVersion,
		hashFunc:    mh.Names[DefaultHash],
		emptyDirs:   true,
		concurrency: runtime.GOMAXPROCS(0),
	}
}

// WithChunker sets the chunker, in kubo's syntax: "size-N", "rabin",
// "rabin-MIN-AVG-MAX" or "buzhash". Default: DefaultChunker (size-262144).
func WithChunker(spec string) Option { return func(o *options) { o.chunker = spec } }

// WithCidVersion sets the CID version, 0 or 1. As in kubo, version 1
// implies raw leaves unless WithRawLeaves says otherwise. Default:
// DefaultCidVersion (1).
func WithCidVersion(v int) Option { return func(o *options) { o.cidVersion = v } }

// WithRawLeaves forces raw leaves on or off. By default leaves are raw for
// CIDv1 and dag-pb for CIDv0, as in kubo.
func WithRawLeaves(raw bool) Option { return func(o *options) { o.rawLeaves = &raw } }

// WithHash sets the multihash function by name ("sha2-256", "blake3", ...).
// A hash other than sha2-256 needs CIDv1. Default: DefaultHash (sha2-256).
func WithHash(name string) Option {
	return func(o *options) {
		if code, ok := mh.Names[name]; ok {
			o.hashFunc = code
		} else {
			o.hashFunc = 0 // reported by ImportDir
		}
	}
}

// WithHidden includes files and directories whose names start with a dot.
// Default: false, as kubo's --hidden.
func WithHidden(include bool) Option { return func(o *options) { o.hidden = include } }

// WithEmptyDirs keeps (true) or drops (false) empty directories below the
// root. Default: true, as kubo.
func WithEmptyDirs(keep bool) Option { return func(o *options) { o.emptyDirs = keep } }

// WithTrickle uses the trickle layout instead of the balanced one.
func WithTrickle(on bool) Option { return func(o *options) { o.trickle = on } }

// WithOnlyHash computes the root CID without keeping anything to upload.
func WithOnlyHash() Option { return func(o *options) { o.onlyHash = true } }

// WithConcurrency sets how many files are imported at once. If n <= 0, it
// is ignored. Default: GOMAXPROCS.
func WithConcurrency(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.concurrency = n
		}
	}
}

// WithProgress calls fn with the number of file bytes read as the import
// goes on. fn may be called from several goroutines at once.
func WithProgress(fn func(n int64)) Option { return func(o *options) { o.progress = fn } }

// ErrUnsupportedFile is returned for files that are neither regular files,
// directories nor symlinks (devices, sockets, pipes).
var ErrUnsupportedFile = errors.New("unsupported file type")

// DAG is the result of an import: the root CID and, unless the import was
// hash-only, what is needed to read every block back for upload.
type DAG struct {
	// Root is the CID of the imported directory (or file).
	Root cid.Cid
	// FileBytes is the number of bytes of file content imported.
	FileBytes int64
	// Files is the number of regular files imported.
	Files int

	blocks *blockSet // nil after WithOnlyHash
}

// node is one entry of the directory tree being imported.
type node struct {
	name     string
	path     string
	mode     fs.FileMode
	children []*node
	target   string    // symlink target
	result   ipld.Node // set once imported
}

// ImportDir imports the file or directory at path as a UnixFS DAG.
func ImportDir(ctx context.Context, path string, opts ...Option) (*DAG, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	prefix, rawLeaves, err := o.prefix()
	if err != nil {
		return nil, err
	}
	// Fail on a bad chunker spec before reading anything.
	if _, err := chunker.FromString(strings.NewReader(""), o.chunker); err != nil {
		return nil, fmt.Errorf("publish: chunker %q: %w", o.chunker, err)
	}

	root, err := walk(path, o)
	if err != nil {
		return nil, err
	}

	d := &DAG{}
	if !o.onlyHash {
		d.blocks = newBlockSet()
	}

	// Import every regular file, o.concurrency at a time.
	var files []*node
	collectFiles(root, &files)
	d.Files = len(files)
	var total atomic.Int64
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan *node)
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	for range min(o.concurrency, max(len(files), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for f := range work {
				n, err := importFile(ctx, f, o, prefix, rawLeaves, d.blocks)
				if err != nil {
					select {
					case errc <- err:
					default:
					}
					cancel()
					continue
				}
				total.Add(n)
			}
		}()
	}
feed:
	for _, f := range files {
		select {
		case work <- f:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errc:
		return nil, err
	default:
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("publish: import %s: %w", path, err)
	}
	d.FileBytes = total.Load()

	ds := dagService(d.blocks)
	rn, err := buildTree(ctx, root, o, prefix, ds)
	if err != nil {
		return nil, err
	}
	d.Root = rn.Cid()
	return d, nil
}

func (o options) prefix() (cid.Prefix, bool, error) {
	if o.hashFunc == 0 {
		return cid.Prefix{}, false, errors.New("publish: unknown hash function")
	}
	version := o.cidVersion
	if o.hashFunc != mh.SHA2_256 && version == 0 {
		return cid.Prefix{}, false, errors.New("publish: CIDv0 only supports sha2-256")
	}
	prefix, err := mdag.PrefixForCidVersion(version)
	if err != nil {
		return cid.Prefix{}, false, fmt.Errorf("publish: %w", err)
	}
	prefix.MhType = o.hashFunc
	prefix.MhLength = -1
	raw := version > 0
	if o.rawLeaves != nil {
		raw = *o.rawLeaves
	}
	return prefix, raw, nil
}

// walk reads the tree under path, sorted by name as kubo's serial files are.
func walk(path string, o options) (*node, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	root := &node{name: filepath.Base(path), path: path, mode: st.Mode()}
	if st.IsDir() {
		if err := walkDir(root, o); err != nil {
			return nil, err
		}
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("publish: %s: %w", path, ErrUnsupportedFile)
	}
	return root, nil
}

func walkDir(dir *node, o options) error {
	entries, err := os.ReadDir(dir.path)
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if !o.hidden && strings.HasPrefix(name, ".") {
			continue
		}
		child := &node{name: name, path: filepath.Join(dir.path, name), mode: e.Type()}
		switch {
		case e.IsDir():
			if err := walkDir(child, o); err != nil {
				return err
			}
			if len(child.children) == 0 && !o.emptyDirs {
				continue
			}
		case e.Type()&fs.ModeSymlink != 0:
			if child.target, err = os.Readlink(child.path); err != nil {
				return fmt.Errorf("publish: %w", err)
			}
		case e.Type().IsRegular():
		default:
			return fmt.Errorf("publish: %s: %w (%s)", child.path, ErrUnsupportedFile, e.Type())
		}
		dir.children = append(dir.children, child)
	}
	return nil
}

func collectFiles(n *node, out *[]*node) {
	if n.mode.IsRegular() {
		*out = append(*out, n)
		return
	}
	for _, c := range n.children {
		collectFiles(c, out)
	}
}

// importFile chunks one regular file into a UnixFS file DAG and returns the
// number of bytes read.
func importFile(ctx context.Context, n *node, o options, prefix cid.Prefix, rawLeaves bool, bs *blockSet) (int64, error) {
	f, err := os.Open(n.path)
	if err != nil {
		return 0, fmt.Errorf("publish: %w", err)
	}
	defer f.Close()
	r := &countingReader{ctx: ctx, r: f, progress: o.progress}
	spl, err := chunker.FromString(r, o.chunker)
	if err != nil {
		return 0, fmt.Errorf("publish: chunker %q: %w", o.chunker, err)
	}
	var ds ipld.DAGService = discard{}
	if bs != nil {
		ds = &fileDAGService{set: bs, path: n.path, rawLeaves: rawLeaves}
	}
	params := helpers.DagBuilderParams{
		Dagserv:    ds,
		RawLeaves:  rawLeaves,
		Maxlinks:   helpers.DefaultLinksPerBlock,
		CidBuilder: prefix,
	}
	db, err := params.New(spl)
	if err != nil {
		return 0, fmt.Errorf("publish: %s: %w", n.path, err)
	}
	var nd ipld.Node
	if o.trickle {
		nd, err = trickle.Layout(db)
	} else {
		nd, err = balanced.Layout(db)
	}
	if err != nil {
		return 0, fmt.Errorf("publish: import %s: %w", n.path, err)
	}
	size, err := nd.Size()
	if err != nil {
		return 0, fmt.Errorf("publish: %s: %w", n.path, err)
	}
	// Keep only what a parent directory's link needs, not the leaf bytes.
	n.result = linkTarget{c: nd.Cid(), size: size}
	return r.n, nil
}

// buildTree builds directory and symlink nodes bottom-up once every file is
// imported.
func buildTree(ctx context.Context, n *node, o options, prefix cid.Prefix, ds ipld.DAGService) (ipld.Node, error) {
	switch {
	case n.mode.IsRegular():
		return n.result, nil
	case n.mode&fs.ModeSymlink != 0:
		data, err := unixfs.SymlinkData(n.target)
		if err != nil {
			return nil, fmt.Errorf("publish: symlink %s: %w", n.path, err)
		}
		nd := mdag.NodeWithData(data)
		if err := nd.SetCidBuilder(prefix); err != nil {
			return nil, fmt.Errorf("publish: %w", err)
		}
		if err := ds.Add(ctx, nd); err != nil {
			return nil, err
		}
		return nd, nil
	}
	dir, err := uio.NewDirectory(ds,
		uio.WithCidBuilder(prefix),
		uio.WithMaxHAMTFanout(uio.DefaultShardWidth),
		uio.WithSizeEstimationMode(uio.SizeEstimationLinks))
	if err != nil {
		return nil, fmt.Errorf("publish: directory %s: %w", n.path, err)
	}
	for _, c := range n.children {
		cn, err := buildTree(ctx, c, o, prefix, ds)
		if err != nil {
			return nil, err
		}
		if err := dir.AddChild(ctx, c.name, cn); err != nil {
			return nil, fmt.Errorf("publish: add %s: %w", c.path, err)
		}
	}
	nd, err := dir.GetNode()
	if err != nil {
		return nil, fmt.Errorf("publish: directory %s: %w", n.path, err)
	}
	if err := ds.Add(ctx, nd); err != nil {
		return nil, err
	}
	n.children = nil // let the imported tree go
	return nd, nil
}

// linkTarget is an ipld.Node that only knows its CID and cumulative size:
// all that a directory needs to link to an imported file. Its other methods
// must not be called (the embedded Node is nil): boxo's directory builders
// link to it with ipld.MakeLink, and a sharded directory's Add of it goes
// to setDAGService, which knows it (or to discard).
type linkTarget struct {
	ipld.Node
	c    cid.Cid
	size uint64
}

func (l linkTarget) Cid() cid.Cid             { return l.c }
func (l linkTarget) Size() (uint64, error)    { return l.size, nil }
func (l linkTarget) String() string           { return l.c.String() }
func (l linkTarget) Links() []*ipld.Link      { return nil }
func (l linkTarget) Loggable() map[string]any { return map[string]any{"cid": l.c} }

// countingReader counts bytes, reports progress and stops on cancellation.
type countingReader struct {
	ctx      context.Context
	r        io.Reader
	n        int64
	progress func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.progress != nil && n > 0 {
		c.progress(int64(n))
	}
	return n, err
}
