package main

import (
	"crypto/sha256"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// hashTree returns the SHA-256 of every regular file under dir, keyed by
// slash-separated relative path, and the total file size.
func hashTree(t *testing.T, dir string) (map[string][sha256.Size]byte, int64) {
	t.Helper()
	sums := map[string][sha256.Size]byte{}
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		if strings.HasPrefix(d.Name(), ".") {
			t.Errorf("hidden entry %s", p)
		}
		if d.IsDir() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		n, err := io.Copy(h, f)
		if err != nil {
			return err
		}
		total += n
		rel, _ := filepath.Rel(dir, p)
		sums[filepath.ToSlash(rel)] = [sha256.Size]byte(h.Sum(nil))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return sums, total
}

func TestGenerateDatasetDeterministic(t *testing.T) {
	const total = 4 << 20
	tmp := t.TempDir()
	a, b := filepath.Join(tmp, "a"), filepath.Join(tmp, "b")

	dsA, err := generateDataset(t.Context(), a, total, datasetSeed)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := generateDataset(t.Context(), b, total, datasetSeed); err != nil {
		t.Fatal(err)
	}

	sumsA, bytesA := hashTree(t, a)
	sumsB, _ := hashTree(t, b)
	if !maps.Equal(sumsA, sumsB) {
		t.Fatal("two generations with the same seed differ")
	}
	if bytesA != total || dsA.Bytes != total {
		t.Errorf("generated %d bytes (reported %d), want exactly %d", bytesA, dsA.Bytes, total)
	}
	if len(sumsA) != dsA.Files || dsA.Files < 20 {
		t.Errorf("found %d files, reported %d; want the same and at least 20", len(sumsA), dsA.Files)
	}
	if dsA.Dirs < 3 {
		t.Errorf("only %d directories, want a nested tree", dsA.Dirs)
	}

	other := planDataset(total, datasetSeed+1)
	if planMarker(other, total, 0).PlanSHA256 == planMarker(planDataset(total, datasetSeed), total, 0).PlanSHA256 {
		t.Error("different seeds produced the same layout")
	}
}

func TestPlanDatasetFullSize(t *testing.T) {
	const total = refTotalBytes
	plan := planDataset(total, datasetSeed)
	var sum int64
	var small, medium, large int
	for _, f := range plan {
		sum += f.Size
		switch {
		case f.Size <= smallMaxBytes:
			small++
		case f.Size <= mediumMaxBytes:
			medium++
		case f.Size >= 10<<20:
			large++
		}
	}
	if sum != total {
		t.Errorf("plan totals %d bytes, want %d", sum, total)
	}
	if small < 1500 || medium < 100 || large != refLargeFiles {
		t.Errorf("composition small=%d medium=%d large=%d; want ~%d/%d/%d",
			small, medium, large, refSmallFiles, refMediumFiles, refLargeFiles)
	}
}

func TestEnsureDatasetReuseAndRepair(t *testing.T) {
	const total = 1 << 20
	root := t.TempDir()
	ds, err := ensureDataset(t.Context(), root, total)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := hashTree(t, ds.Dir)

	// Damage the cached tree; ensureDataset must notice and regenerate.
	var victim string
	for p := range before {
		victim = p
		break
	}
	if err := os.Remove(filepath.Join(ds.Dir, filepath.FromSlash(victim))); err != nil {
		t.Fatal(err)
	}
	if _, err := ensureDataset(t.Context(), root, total); err != nil {
		t.Fatal(err)
	}
	after, n := hashTree(t, ds.Dir)
	if !maps.Equal(before, after) || n != total {
		t.Error("regenerated dataset differs from the original")
	}
}
