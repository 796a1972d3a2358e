package billing

import (
	"context"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/internal/testkit"
)

// TestReporterParts: an epoch with more responses than a batch holds
// (MaxRecords; 10 here) goes out in parts, which billing accepts side by
// side.
func TestReporterParts(t *testing.T) {
	key, pub := testkit.Key(t, 32), testkit.Key(t, 33)
	now := time.Now()
	tl := newTestLedger(t, "", Config{})
	tl.setNow(now.Add(time.Minute))
	tl.content.publish("blog", pub.ID, map[string]int64{"c": 10})
	tl.admit(t, key)
	srv := httptest.NewServer(tl.Handler(nil))
	defer srv.Close()
	rep := billingapi.NewReporter(key, srv.URL, billingapi.WithEpoch(time.Minute), billingapi.WithPartSize(10))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); rep.Run(ctx) }()
	const n = 25
	for range n {
		rep.Observe(billingapi.Served{Name: "blog", CID: "c", Bytes: 10, Status: 200, Time: now, Client: netip.MustParseAddr("192.0.2.1")})
	}
	time.Sleep(50 * time.Millisecond)
	cancel()
	<-done
	var parts, records int
	rows, err := tl.db.Query(`SELECT part, records FROM batches ORDER BY part`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var p, r int
		rows.Scan(&p, &r)
		if p != parts {
			t.Fatalf("part %d, want %d", p, parts)
		}
		parts++
		records += r
	}
	if parts != 3 || records != n {
		t.Fatalf("%d parts with %d records, want 3 with %d", parts, records, n)
	}
}
