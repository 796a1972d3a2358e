package origindb

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/topcdn/topcdn/internal/testkit/pgtest"
	"github.com/topcdn/topcdn/originapi"
	"github.com/topcdn/topcdn/sqldb"
)

// TestLogsCommitInOrder: appenders on several connections (origins
// sharing a PostgreSQL database) write to the billing log and the
// name-change stream while a reader pages through each by ID, as billing
// and the edges do; the reader must see every entry, each once, in order.
// Each appender dawdles inside its transaction after appending, so with
// IDs from a sequence the transaction holding ID n commits after the one
// holding n+1, and a reader that read n+1 skipped n for good: this test
// failed that way before the IDs came from counter rows.
func TestLogsCommitInOrder(t *testing.T) {
	logs := []struct {
		name   string
		append func(ctx context.Context, tx *sqldb.Tx) error
		read   func(ctx context.Context, db *sqldb.DB, since int64) ([]int64, error)
	}{
		{"billing log", func(ctx context.Context, tx *sqldb.Tx) error {
			return AppendEvent(ctx, tx, originapi.BillingEvent{Kind: originapi.EventUpload, Root: "r", Publisher: "p", At: time.Now()})
		}, func(ctx context.Context, db *sqldb.DB, since int64) ([]int64, error) {
			evs, _, err := Events(ctx, db, since, 7)
			ids := make([]int64, len(evs))
			for i, ev := range evs {
				ids[i] = ev.ID
			}
			return ids, err
		}},
		{"name changes", func(ctx context.Context, tx *sqldb.Tx) error {
			_, err := AppendChange(ctx, tx, originapi.NameChange{Kind: originapi.ChangeRecord, Name: "blog", IPNS: "k51",
				Record: []byte("r"), At: time.Now()})
			return err
		}, func(ctx context.Context, db *sqldb.DB, since int64) ([]int64, error) {
			last, err := LastChange(ctx, db)
			if err != nil {
				return nil, err
			}
			cs, err := Changes(ctx, db, since, last, 7, 1<<20)
			ids := make([]int64, len(cs))
			for i, c := range cs {
				ids[i] = c.ID
			}
			return ids, err
		}},
	}
	for _, lg := range logs {
		t.Run(lg.name, func(t *testing.T) {
			pgtest.Dialects(t, func(t *testing.T, dsn string) {
				ctx := context.Background()
				db, err := Open(ctx, dsn)
				if err != nil {
					t.Fatal(err)
				}
				defer db.Close()
				const appenders, each = 4, 15
				var wg sync.WaitGroup
				var mu sync.Mutex
				appended := 0
				for range appenders {
					wg.Go(func() {
						for range each {
							err := sqldb.InTx(ctx, db, func(tx *sqldb.Tx) error {
								if err := lg.append(ctx, tx); err != nil {
									return err
								}
								time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
								return nil
							})
							if err != nil {
								t.Error(err)
								return
							}
							mu.Lock()
							appended++
							mu.Unlock()
						}
					})
				}
				done := make(chan struct{})
				go func() { wg.Wait(); close(done) }()
				defer func() { <-done }() // the appenders use db
				var seen []int64
				for finished := false; ; {
					select {
					case <-done:
						finished = true
					default:
					}
					ids, err := lg.read(ctx, db, int64(len(seen)))
					if err != nil {
						t.Fatal(err)
					}
					for _, id := range ids {
						if want := int64(len(seen) + 1); id != want {
							t.Fatalf("read ID %d after %d: entries skipped", id, len(seen))
						}
						seen = append(seen, id)
					}
					if finished && len(ids) == 0 {
						break
					}
				}
				if len(seen) != appended || appended != appenders*each {
					t.Fatalf("read %d entries of the %d appended (want %d)", len(seen), appended, appenders*each)
				}
			})
		})
	}
}
