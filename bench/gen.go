package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"time"
)

// Synthetic dataset parameters. The composition is specified for a 256 MiB
// tree and scaled linearly for other sizes. Bump datasetVersion whenever the
// generator's output changes so cached copies are regenerated.
const (
	datasetVersion = 1
	// datasetSeed seeds every PRNG used by the generator.
	datasetSeed uint64 = 0x746f7063646e // "topcdn"

	refTotalBytes  = 256 << 20
	refSmallFiles  = 2000 // 1–16 KiB: pages, stylesheets, scripts, JSON
	refMediumFiles = 200  // 100 KiB–2 MiB (log-uniform): images, fonts, PDFs
	refLargeFiles  = 4    // the remainder, split unevenly: videos, archives
	refDirs        = 160  // distinct nested directories for small/medium files

	smallMinBytes  = 1 << 10
	smallMaxBytes  = 16 << 10
	mediumMinBytes = 100 << 10
	mediumMaxBytes = 2 << 20
	// smallMediumShare caps the bytes given to small and medium files, so
	// large files always get at least the rest.
	smallMediumShare = 0.60
)

// plannedFile is one file of a planned dataset.
type plannedFile struct {
	// Path is slash-separated and relative to the dataset root.
	Path string
	// Size is the file length in bytes.
	Size int64
}

// dataset describes a generated test tree.
type dataset struct {
	// Dir is the tree's root directory.
	Dir string `json:"dir"`
	// Bytes is the total size of all files.
	Bytes int64 `json:"bytes"`
	// Files and Dirs count regular files and directories (excluding Dir).
	Files int `json:"files"`
	Dirs  int `json:"dirs"`
}

// datasetMarker is stored next to a cached dataset to identify what
// generated it. A cached tree is reused only if its marker matches exactly.
type datasetMarker struct {
	Version    int    `json:"version"`
	Seed       uint64 `json:"seed"`
	TotalBytes int64  `json:"total_bytes"`
	Files      int    `json:"files"`
	PlanSHA256 string `json:"plan_sha256"`
}

// deriveSeed returns a ChaCha8 seed for one purpose (label) of seed, so the
// layout and the content streams are independent.
func deriveSeed(seed uint64, label string) [32]byte {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], seed)
	return sha256.Sum256(append(b[:], label...))
}

// planDataset deterministically lays out a site-like tree of exactly total
// bytes: ~2000 small files and ~200 medium files spread over ~160 nested
// directories, plus a few large files holding the remainder (counts scale
// with total). File names never start with a dot.
func planDataset(total int64, seed uint64) []plannedFile {
	r := rand.New(rand.NewChaCha8(deriveSeed(seed, "layout")))
	scaled := func(n int) int {
		return max(1, int(math.Round(float64(n)*float64(total)/refTotalBytes)))
	}

	dirs := make([]string, scaled(refDirs))
	for i := range dirs {
		dirs[i] = randomDir(r)
	}

	var plan []plannedFile
	var used int64
	budget := int64(float64(total) * smallMediumShare)
	add := func(dir, stem, ext string, size int64) {
		size = min(size, budget-used)
		if size <= 0 {
			return
		}
		name := fmt.Sprintf("%s-%04d.%s", stem, len(plan), ext)
		plan = append(plan, plannedFile{Path: path.Join(dir, name), Size: size})
		used += size
	}

	smallStems := []string{"index", "page", "style", "app", "data", "feed", "icon", "manifest"}
	smallExts := []string{"html", "css", "js", "json", "svg", "xml", "txt"}
	for range scaled(refSmallFiles) {
		size := smallMinBytes + r.Int64N(smallMaxBytes-smallMinBytes+1)
		add(pick(r, dirs), pick(r, smallStems), pick(r, smallExts), size)
	}

	mediumStems := []string{"photo", "banner", "hero", "font", "whitepaper", "bundle"}
	mediumExts := []string{"jpg", "png", "webp", "woff2", "pdf", "wasm"}
	logRatio := math.Log(float64(mediumMaxBytes) / mediumMinBytes)
	for range scaled(refMediumFiles) {
		size := int64(mediumMinBytes * math.Exp(r.Float64()*logRatio))
		add(pick(r, dirs), pick(r, mediumStems), pick(r, mediumExts), size)
	}

	// Large files share the remainder with random weights in [1, 2); the
	// last one absorbs rounding so the total is exact.
	remaining := total - used
	weights := make([]float64, scaled(refLargeFiles))
	var sum float64
	for i := range weights {
		weights[i] = 1 + r.Float64()
		sum += weights[i]
	}
	largeDirs := []string{"media/video", "downloads/releases", "media/audio", "downloads/datasets"}
	largeExts := []string{"mp4", "tar.gz", "flac", "zip"}
	budget = total // lift the small/medium cap
	for i, w := range weights {
		size := int64(float64(remaining) * w / sum)
		if i == len(weights)-1 {
			size = total - used
		}
		add(largeDirs[i%len(largeDirs)], "large", largeExts[i%len(largeExts)], size)
	}
	return plan
}

// randomDir returns a nested, site-like directory path (3–4 levels).
func randomDir(r *rand.Rand) string {
	topics := []string{"getting-started", "api", "guides", "reference", "tutorials", "faq", "internals", "ops"}
	switch r.IntN(4) {
	case 0:
		return fmt.Sprintf("blog/%d/%02d/post-%03d", 2016+r.IntN(10), 1+r.IntN(12), r.IntN(1000))
	case 1:
		return fmt.Sprintf("docs/v%d/%s/%s", 1+r.IntN(3), pick(r, topics), pick(r, topics))
	case 2:
		kinds := []string{"css", "js", "img", "fonts", "icons"}
		return fmt.Sprintf("assets/%s/group-%02d", pick(r, kinds), r.IntN(20))
	default:
		return fmt.Sprintf("static/%s/%02x/%02x", pick(r, topics), r.IntN(256), r.IntN(256))
	}
}

// pick returns a uniformly random element of s.
func pick[T any](r *rand.Rand, s []T) T { return s[r.IntN(len(s))] }

// planMarker summarizes plan for the dataset marker.
func planMarker(plan []plannedFile, total int64, seed uint64) datasetMarker {
	h := sha256.New()
	for _, f := range plan {
		fmt.Fprintf(h, "%s\x00%d\n", f.Path, f.Size)
	}
	return datasetMarker{
		Version:    datasetVersion,
		Seed:       seed,
		TotalBytes: total,
		Files:      len(plan),
		PlanSHA256: hex.EncodeToString(h.Sum(nil)),
	}
}

// planStats returns the dataset description of plan rooted at dir.
func planStats(dir string, plan []plannedFile) dataset {
	ds := dataset{Dir: dir, Files: len(plan)}
	seen := map[string]bool{}
	for _, f := range plan {
		ds.Bytes += f.Size
		for d := path.Dir(f.Path); d != "." && !seen[d]; d = path.Dir(d) {
			seen[d] = true
		}
	}
	ds.Dirs = len(seen)
	return ds
}

// generateDataset writes a fresh dataset of total bytes into dir, which must
// not exist yet or be empty.
func generateDataset(ctx context.Context, dir string, total int64, seed uint64) (dataset, error) {
	plan := planDataset(total, seed)
	if err := writeDataset(ctx, dir, plan, seed); err != nil {
		return dataset{}, err
	}
	return planStats(dir, plan), nil
}

// writeDataset creates the files of plan under dir, filling them with one
// ChaCha8 keystream (incompressible, but fully determined by seed).
func writeDataset(ctx context.Context, dir string, plan []plannedFile, seed uint64) error {
	src := rand.NewChaCha8(deriveSeed(seed, "content"))
	buf := make([]byte, 1<<20)
	for _, f := range plan {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("generating dataset: %w", err)
		}
		p := filepath.Join(dir, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("generating dataset: %w", err)
		}
		if err := writeRandomFile(p, f.Size, src, buf); err != nil {
			return fmt.Errorf("generating dataset: %w", err)
		}
	}
	return nil
}

// writeRandomFile creates path with size bytes read from src, using buf as
// scratch space.
func writeRandomFile(path string, size int64, src *rand.ChaCha8, buf []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	for size > 0 {
		chunk := buf[:min(size, int64(len(buf)))]
		src.Read(chunk) // never fails
		if _, err := f.Write(chunk); err != nil {
			f.Close()
			return err
		}
		size -= int64(len(chunk))
	}
	return f.Close()
}

// verifyTree checks that dir holds exactly the files of plan with the
// planned sizes (contents are not re-read).
func verifyTree(dir string, plan []plannedFile) error {
	want := make(map[string]int64, len(plan))
	for _, f := range plan {
		want[f.Path] = f.Size
	}
	found := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		size, ok := want[rel]
		if !ok || !d.Type().IsRegular() {
			return fmt.Errorf("unexpected entry %s", rel)
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Size() != size {
			return fmt.Errorf("%s has %d bytes, want %d", rel, info.Size(), size)
		}
		found++
		return nil
	})
	if err != nil {
		return fmt.Errorf("verifying dataset %s: %w", dir, err)
	}
	if found != len(plan) {
		return fmt.Errorf("verifying dataset %s: found %d files, want %d", dir, found, len(plan))
	}
	return nil
}

// datasetName names the cached tree for total bytes.
func datasetName(total int64) string {
	if total%(1<<20) == 0 {
		return fmt.Sprintf("site-%dMiB", total>>20)
	}
	return fmt.Sprintf("site-%dB", total)
}

// ensureDataset returns the cached dataset of total bytes under root,
// (re)generating it if it is missing, was made by a different generator
// version, or does not match its plan. The marker lives beside the tree
// (root/<name>.json), so the tree itself contains no extra or hidden files.
func ensureDataset(ctx context.Context, root string, total int64) (dataset, error) {
	dir := filepath.Join(root, datasetName(total))
	markerPath := dir + ".json"
	plan := planDataset(total, datasetSeed)
	want := planMarker(plan, total, datasetSeed)

	if got, err := readMarker(markerPath); err == nil && got == want {
		err := verifyTree(dir, plan)
		if err == nil {
			return planStats(dir, plan), nil
		}
		fmt.Fprintf(os.Stderr, "cached dataset is damaged, regenerating: %v\n", err)
	}

	fmt.Fprintf(os.Stderr, "generating %d MiB dataset (%d files) in %s ...\n", total>>20, len(plan), dir)
	start := time.Now()
	tmp := dir + ".tmp"
	for _, p := range []string{markerPath, dir, tmp} {
		if err := os.RemoveAll(p); err != nil {
			return dataset{}, fmt.Errorf("clearing old dataset: %w", err)
		}
	}
	if err := writeDataset(ctx, tmp, plan, datasetSeed); err != nil {
		return dataset{}, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return dataset{}, fmt.Errorf("installing dataset: %w", err)
	}
	if err := writeMarker(markerPath, want); err != nil {
		return dataset{}, err
	}
	fmt.Fprintf(os.Stderr, "generated dataset in %v\n", time.Since(start).Round(time.Millisecond))
	return planStats(dir, plan), nil
}

// readMarker loads a dataset marker.
func readMarker(path string) (datasetMarker, error) {
	var m datasetMarker
	b, err := os.ReadFile(path)
	if err != nil {
		return m, fmt.Errorf("reading dataset marker: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("parsing dataset marker %s: %w", path, err)
	}
	return m, nil
}

// writeMarker atomically stores a dataset marker.
func writeMarker(path string, m datasetMarker) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding dataset marker: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing dataset marker: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return errors.Join(fmt.Errorf("writing dataset marker: %w", err), os.Remove(tmp))
	}
	return nil
}
