package billing

import (
	"context"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
)

// BenchmarkIngestBatch measures verifying and storing a batch of 10,000
// records, per record.
func BenchmarkIngestBatch(b *testing.B) {
	ctx := context.Background()
	edge, pub := testkit.Key(b, 70), testkit.Key(b, 71)
	tl := newTestLedger(b, "", Config{AcceptWindow: 1000 * time.Hour})
	objs := map[string]int64{}
	for i := range 100 {
		objs["c"+strconv.Itoa(i)] = 4096
	}
	tl.content.publish("blog", pub.ID, objs)
	tl.admit(b, edge)
	const n = 10000
	envs := make([]*identity.Envelope, b.N)
	for i := range envs {
		epoch := t0.Unix() - int64(i+1)*60
		recs := make([]billingapi.Record, n)
		for j := range recs {
			recs[j] = rec(uint64(i*n+j+1), "blog", "c"+strconv.Itoa(j%100), 1000, epoch)
		}
		envs[i] = signBatch(b, edge, epoch, uint64(i+1), recs)
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		if res, err := tl.IngestBatch(ctx, envs[i], netip.Addr{}); err != nil || res.Accepted != n {
			b.Fatalf("%+v, %v", res, err)
		}
	}
	b.ReportMetric(float64(b.N*n)/time.Since(start).Seconds(), "records/s")
}
