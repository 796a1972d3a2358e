package publish

import (
	"context"
	"testing"
)

// BenchmarkImportDir measures hash-only import of the "site" and "hamt"
// fixtures (see writeFixture); `go run ./bench publish` compares a 256 MiB
// tree against kubo.
func BenchmarkImportDir(b *testing.B) {
	for _, fx := range []string{"site", "hamt"} {
		b.Run(fx, func(b *testing.B) {
			root := writeFixture(b, b.TempDir(), fx)
			d, err := ImportDir(context.Background(), root, WithOnlyHash())
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(d.FileBytes)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := ImportDir(context.Background(), root, WithOnlyHash()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
