package origindb

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit/pgtest"
	"github.com/topcdn/topcdn/originapi"
)

// TestNameChanges: changes are read back as appended, in pages bounded by
// count and bytes (the first change whatever its size); trimming deletes
// only an old prefix, keeps the last ones asked for and leaves no gap; IDs
// are never reused. On SQLite and PostgreSQL.
func TestNameChanges(t *testing.T) { pgtest.Dialects(t, testNameChanges) }

func testNameChanges(t *testing.T, dsn string) {
	ctx := context.Background()
	db, err := Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if oldest, last, err := ChangesSpan(ctx, db); err != nil || oldest != 1 || last != 0 {
		t.Fatalf("empty stream: oldest %d, last %d, %v", oldest, last, err)
	}
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	purge := &identity.Envelope{Type: originapi.TypePurge, Signer: "12D3", Body: []byte(`{"name":"blog"}`), Sig: []byte{1, 2}}
	// Six changes one minute apart, but the fourth one's clock went back.
	ats := []time.Duration{0, 1, 2, 0, 4, 5}
	for i, d := range ats {
		c := originapi.NameChange{Kind: originapi.ChangeRecord, Name: "blog", IPNS: "k51", Record: bytes.Repeat([]byte{byte(i)}, 100),
			At: base.Add(d * time.Minute)}
		if i == 2 {
			c = originapi.NameChange{Kind: originapi.ChangePurge, Name: "blog", IPNS: "k51", Purge: purge, At: base.Add(d * time.Minute)}
		}
		id, err := AppendChange(ctx, db, c)
		if err != nil || id != int64(i+1) {
			t.Fatalf("append %d: ID %d, %v", i, id, err)
		}
	}

	pages := []struct {
		name                    string
		since, to               int64
		limit, maxBytes         int
		wantFirst, wantN        int64
		wantPurgeAt, wantRecord int
	}{
		{name: "all", since: 0, to: 6, limit: 64, maxBytes: 1 << 20, wantFirst: 1, wantN: 6},
		{name: "count", since: 1, to: 6, limit: 2, maxBytes: 1 << 20, wantFirst: 2, wantN: 2},
		{name: "up to to", since: 0, to: 3, limit: 64, maxBytes: 1 << 20, wantFirst: 1, wantN: 3},
		{name: "bytes", since: 0, to: 6, limit: 64, maxBytes: 250, wantFirst: 1, wantN: 2},
		{name: "first whatever its size", since: 0, to: 6, limit: 64, maxBytes: 1, wantFirst: 1, wantN: 1},
		{name: "none after", since: 6, to: 6, limit: 64, maxBytes: 1 << 20, wantN: 0},
	}
	for _, tc := range pages {
		t.Run(tc.name, func(t *testing.T) {
			cs, err := Changes(ctx, db, tc.since, tc.to, tc.limit, tc.maxBytes)
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(cs)) != tc.wantN || cs == nil {
				t.Fatalf("%d changes (%v), want %d", len(cs), cs == nil, tc.wantN)
			}
			for i, c := range cs {
				id := tc.wantFirst + int64(i)
				if c.ID != id || !c.At.Equal(base.Add(ats[id-1]*time.Minute)) {
					t.Errorf("change %d: ID %d at %s", i, c.ID, c.At)
				}
				switch {
				case id == 3 && (c.Kind != originapi.ChangePurge || c.Purge == nil || string(c.Purge.Body) != string(purge.Body) || c.Record != nil):
					t.Errorf("purge read back as %+v", c)
				case id != 3 && (c.Kind != originapi.ChangeRecord || len(c.Record) != 100 || c.Record[0] != byte(id-1) || c.Purge != nil):
					t.Errorf("record %d read back as %+v", id, c)
				}
			}
		})
	}

	trims := []struct {
		name        string
		cutoff      time.Duration
		keep        int
		wantDeleted int64
		wantOldest  int64
	}{
		{name: "nothing old enough", cutoff: 0, keep: 0, wantDeleted: 0, wantOldest: 1},
		{name: "keeps the last ones", cutoff: 10, keep: 4, wantDeleted: 2, wantOldest: 3},
		// 4 is older than the cutoff, but follows 3, which is not: no gap.
		{name: "stops at a recent change", cutoff: 1, keep: 0, wantDeleted: 0, wantOldest: 3},
		{name: "the old prefix", cutoff: 3, keep: 0, wantDeleted: 2, wantOldest: 5},
		{name: "all", cutoff: 10, keep: 0, wantDeleted: 2, wantOldest: 7},
	}
	for _, tc := range trims {
		deleted, oldest, err := TrimChanges(ctx, db, base.Add(tc.cutoff*time.Minute), tc.keep)
		if err != nil || deleted != tc.wantDeleted || oldest != tc.wantOldest {
			t.Fatalf("%s: deleted %d, oldest %d, %v; want %d, %d", tc.name, deleted, oldest, err, tc.wantDeleted, tc.wantOldest)
		}
		if o, last, err := ChangesSpan(ctx, db); err != nil || o != oldest || last != 6 {
			t.Fatalf("%s: span %d-%d, %v", tc.name, o, last, err)
		}
	}
	if id, err := AppendChange(ctx, db, originapi.NameChange{Kind: originapi.ChangeRecord, Name: "blog", IPNS: "k51", At: base}); err != nil || id != 7 {
		t.Fatalf("append after trimming all: ID %d, %v; want 7 (never reused)", id, err)
	}
}
