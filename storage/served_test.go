package storage

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/topcdn/topcdn/storageapi"
)

func TestServedReadsAndPrune(t *testing.T) {
	ctx := context.Background()
	ts := newTestServer(t, 1<<20)
	id := ts.putShard(t, randomShard(9, 100))
	var sent []string
	for i := range 5 {
		req := getRequest(t, ts.keys.reader, ts.readOrder(id, int64(i), 3, fmt.Sprintf("s-%d", i)), id,
			fmt.Sprintf("bytes=%d-%d", i, i+2))
		if rec := ts.do(req); rec.Code != http.StatusPartialContent {
			t.Fatalf("read %d: %d %s", i, rec.Code, rec.Body)
		}
		sent = append(sent, req.Header.Get(storageapi.OrderHeader))
	}
	reads, err := ts.ServedReads(ctx, 0, 3)
	if err != nil || len(reads) != 3 {
		t.Fatalf("first page: %d reads, %v", len(reads), err)
	}
	for i, r := range reads {
		if r.Envelope != sent[i] || r.Reader != ts.keys.reader.ID.String() || r.Length != 3 || r.Serial != fmt.Sprintf("s-%d", i) {
			t.Fatalf("read %d: %+v", i, r)
		}
	}
	more, err := ts.ServedReads(ctx, reads[2].ID, 10)
	if err != nil || len(more) != 2 {
		t.Fatalf("second page: %d reads, %v", len(more), err)
	}

	// Collected reads are no longer listed, but still refuse their replay
	// until their orders have expired.
	if n, err := ts.PruneServedReads(ctx, reads[2].ID); err != nil || n != 0 {
		t.Fatalf("prune: %d, %v", n, err)
	}
	left, err := ts.ServedReads(ctx, 0, 10)
	if err != nil || len(left) != 2 || left[0].ID != more[0].ID {
		t.Fatalf("after prune: %+v, %v", left, err)
	}
	replay := getRequest(t, ts.keys.reader, ts.readOrder(id, 0, 3, "s-0"), id, "bytes=0-2")
	if rec := ts.do(replay); rec.Code != http.StatusConflict {
		t.Fatalf("replay of a collected order: %d %s", rec.Code, rec.Body)
	}
	// A day later the collected rows are dropped; the uncollected stay.
	ts.now = func() time.Time { return testNow.Add(storageapi.MaxOrderLifetime + time.Minute) }
	if n, err := ts.PruneServedReads(ctx, reads[2].ID); err != nil || n != 3 {
		t.Fatalf("prune a day later: %d, %v", n, err)
	}
	var rows int
	if err := ts.db.QueryRow(`SELECT count(*) FROM served_reads`).Scan(&rows); err != nil || rows != 2 {
		t.Fatalf("%d rows left, %v", rows, err)
	}
}
