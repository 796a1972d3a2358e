package publish

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
	"github.com/topcdn/topcdn/dag"
)

// kuboBin, when set, makes TestImportMatchesKubo also run kubo on each
// fixture and compare live, e.g.
//
//	go test ./publish -run Kubo -kubo ~/.cache/topcdn/kubo-v0.43.1-ipfs
var kuboBin = flag.String("kubo", "", "path to a kubo `ipfs` binary to cross-check the recorded CIDs")

// kuboFixture is one row of testdata/kubo-cids.json.
type kuboFixture struct {
	Fixture string   `json:"fixture"`
	Args    []string `json:"args"` // extra `ipfs add` / `topcdn publish` flags
	CID     string   `json:"cid"`
}

// writeFixture builds a deterministic directory that exercises every corner
// of the importer: empty, single-block and multi-block files, nested and
// empty directories, a symlink, hidden files (skipped), and a directory big
// enough to be HAMT-sharded.
func writeFixture(t testing.TB, dir, name string) string {
	t.Helper()
	root := filepath.Join(dir, name)
	rng := rand.New(rand.NewChaCha8([32]byte{'t', 'o', 'p', 'c', 'd', 'n'}))
	write := func(rel string, size int) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	switch name {
	case "site":
		write("index.html", 1200)
		write("empty.txt", 0)
		write("css/style.css", 3000)
		write("img/big.bin", 3*262144+12345) // 4 chunks
		write("img/exact.bin", 262144)       // exactly one chunk
		write("a/b/c/deep.txt", 77)
		write(".hidden", 10)
		write("a/.git/config", 10)
		if err := os.MkdirAll(filepath.Join(root, "emptydir"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("index.html", filepath.Join(root, "link.html")); err != nil {
			t.Fatal(err)
		}
	case "hamt":
		for i := range 5000 {
			write(fmt.Sprintf("files/entry-%05d.txt", i), 1+i%64)
		}
		write("readme.txt", 100)
	case "bigfile":
		write("big.bin", 50<<20) // 200 leaves: needs a second level of links
	default:
		t.Fatalf("unknown fixture %q", name)
	}
	return root
}

func TestImportMatchesKubo(t *testing.T) {
	raw, err := os.ReadFile("testdata/kubo-cids.json")
	if err != nil {
		t.Fatal(err)
	}
	var fixtures []kuboFixture
	if err := json.Unmarshal(raw, &fixtures); err != nil {
		t.Fatal(err)
	}
	built := map[string]string{}
	tmp := t.TempDir()
	for _, fx := range fixtures {
		t.Run(fx.Fixture+strings.Join(fx.Args, ""), func(t *testing.T) {
			if testing.Short() && fx.Fixture == "bigfile" {
				t.Skip("large fixture")
			}
			root, ok := built[fx.Fixture]
			if !ok {
				if fx.Fixture == "example-site" {
					root = "../examples/site"
				} else {
					root = writeFixture(t, tmp, fx.Fixture)
				}
				built[fx.Fixture] = root
			}
			opts, err := optionsFromArgs(fx.Args)
			if err != nil {
				t.Fatal(err)
			}
			d, err := ImportDir(context.Background(), root, append(opts, WithOnlyHash())...)
			if err != nil {
				t.Fatal(err)
			}
			if d.Root.String() != fx.CID {
				t.Errorf("root CID = %s, kubo gave %s", d.Root, fx.CID)
			}
			if *kuboBin != "" {
				if got := kuboAdd(t, root, fx.Args); got != fx.CID {
					t.Errorf("live kubo gave %s, recorded %s", got, fx.CID)
				}
			}
		})
	}
}

// optionsFromArgs maps the kubo flags used in testdata/kubo-cids.json.
func optionsFromArgs(args []string) ([]Option, error) {
	var opts []Option
	for _, a := range args {
		k, v, _ := strings.Cut(a, "=")
		switch k {
		case "--cid-version":
			if v == "0" {
				opts = append(opts, WithCidVersion(0))
			} else {
				opts = append(opts, WithCidVersion(1))
			}
		case "--chunker":
			opts = append(opts, WithChunker(v))
		case "--raw-leaves":
			opts = append(opts, WithRawLeaves(v != "false"))
		case "--hidden":
			opts = append(opts, WithHidden(true))
		case "--trickle":
			opts = append(opts, WithTrickle(true))
		default:
			return nil, fmt.Errorf("unknown fixture flag %q", a)
		}
	}
	return opts, nil
}

func kuboAdd(t *testing.T, root string, args []string) string {
	t.Helper()
	repo := t.TempDir()
	env := append(os.Environ(), "IPFS_PATH="+repo)
	init := exec.Command(*kuboBin, "init", "--profile=test")
	init.Env = env
	if out, err := init.CombinedOutput(); err != nil {
		t.Fatalf("ipfs init: %v\n%s", err, out)
	}
	argv := append([]string{"add", "-r", "-Q", "--only-hash"}, args...)
	if !strings.Contains(strings.Join(args, " "), "--cid-version") {
		argv = append(argv, "--cid-version=1")
	}
	cmd := exec.Command(*kuboBin, append(argv, root)...)
	cmd.Env = env
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ipfs add: %v", err)
	}
	return strings.TrimSpace(string(out))
}

func TestImportKeepsBlocksForUpload(t *testing.T) {
	root := writeFixture(t, t.TempDir(), "site")
	d, err := ImportDir(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	// Every block reachable from the root is held, and verifies.
	seen := map[cid.Cid]bool{}
	var walk func(c cid.Cid)
	walk = func(c cid.Cid) {
		if seen[c] {
			return
		}
		seen[c] = true
		data, err := d.blocks.get(c)
		if err != nil {
			t.Fatalf("block %s: %v", c, err)
		}
		if err := dag.Verify(c, data); err != nil {
			t.Fatal(err)
		}
		links, err := dag.Links(c, data)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range links {
			walk(l)
		}
	}
	walk(d.Root)
	if len(d.blocks.inline) == 0 || len(d.blocks.refs) == 0 {
		t.Fatalf("inline=%d refs=%d: want inner nodes in memory and leaves as file references", len(d.blocks.inline), len(d.blocks.refs))
	}
	// A file changed after the import is caught when read back, not uploaded.
	if err := os.WriteFile(filepath.Join(root, "img", "big.bin"), []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	var bad int
	for c := range d.blocks.refs {
		if _, err := d.blocks.get(c); err != nil {
			bad++
		}
	}
	if bad == 0 {
		t.Fatal("reading back leaves of a changed file succeeded")
	}
}

func TestImportErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		path string
		opts []Option
	}{
		{"missing dir", filepath.Join(dir, "nope"), nil},
		{"bad chunker", dir, []Option{WithChunker("size-0x")}},
		{"v0 with blake3", dir, []Option{WithCidVersion(0), WithHash("blake3")}},
		{"unknown hash", dir, []Option{WithHash("md77")}},
		{"bad cid version", dir, []Option{WithCidVersion(7)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if d, err := ImportDir(context.Background(), tc.path, tc.opts...); err == nil {
				t.Fatalf("ImportDir succeeded with root %s", d.Root)
			}
		})
	}
}
