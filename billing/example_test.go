package billing_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"time"

	"github.com/topcdn/topcdn/billing"
	"github.com/topcdn/topcdn/billingapi"
	"github.com/topcdn/topcdn/identity"
)

// An edge reports what it served: one Observe per response, and Run
// posts a signed batch per epoch (here, flushed when ctx ends).
func ExampleNewReporter() {
	got := make(chan *billingapi.Batch, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		_, b, _, err := billingapi.DecodeBatch(body) // what billing does first
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnprocessableEntity)
			return
		}
		got <- b
	}))
	defer srv.Close()

	key, _ := identity.Generate(nil)
	rep := billingapi.NewReporter(key, srv.URL, billingapi.WithEpoch(time.Minute))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); rep.Run(ctx) }()
	for _, n := range []int64{1200, 800} {
		rep.Observe(billingapi.Served{Name: "blog", CID: "bafkreiabc", Bytes: n, Status: http.StatusOK,
			Time: time.Now(), Client: netip.MustParseAddr("198.51.100.7")})
	}
	time.Sleep(10 * time.Millisecond)
	cancel()
	<-done

	b := <-got
	var total int64
	for _, r := range b.Records {
		total += r.Bytes
	}
	fmt.Println(len(b.Records), "records,", total, "bytes, epoch of", b.EpochSeconds, "s")
	// Output: 2 records, 2000 bytes, epoch of 60 s
}

// Prices are per GiB in the token's smallest unit; amounts round down.
func ExampleServedAmount() {
	fmt.Println(billing.ServedAmount(3<<30, 1000))      // 3 GiB at 1000 per GiB
	fmt.Println(billing.ServedAmount(1<<20, 1000))      // 1 MiB: 1000/1024, rounded down
	fmt.Println(billing.StoredAmount(1<<30, 43200, 60)) // a GiB for one minute at 43200 per GiB-month
	// Output:
	// 3000
	// 0
	// 1
}
