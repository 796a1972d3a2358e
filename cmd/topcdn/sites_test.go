package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/topcdn/topcdn/billingapi"
)

// TestRenderSites: the table, the epoch and month it counts, and what
// could not be known, for each state of the services.
func TestRenderSites(t *testing.T) {
	updated := time.Date(2030, 2, 1, 10, 0, 0, 0, time.UTC)
	month := time.Date(2030, 2, 1, 0, 0, 0, 0, time.UTC)
	size := int64(1234567)
	docs := func() siteRow {
		return siteRow{Name: "docs", Key: "12D3KooWQAqQX2YQexMmQapfgrFV88PTtqkyiRo1LjpZoVbkjQYR", InKeystore: true, Published: true,
			Root: "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi", Sequence: 3, Updated: &updated, Size: &size,
			LastEpoch: &billingapi.Traffic{Bytes: 3500, Requests: 12}, Month: &billingapi.Traffic{Bytes: 1 << 30, Requests: 40000}}
	}
	blog := siteRow{Name: "blog", Key: "12D3KooWAccountAccountAccountAccountAccountAcc1234", Account: true, Published: true,
		Root: "bafybeihs3qccqwj4ob7w7cnmgyme4tafpwae2dq4iinkg55l5quxbzjgly", Sequence: 1, Updated: &updated,
		LastEpoch: &billingapi.Traffic{}, Month: &billingapi.Traffic{Bytes: 10, Requests: 1}}
	wiki := siteRow{Name: "wiki", Key: "12D3KooWWikiWikiWikiWikiWikiWikiWikiWikiWikiWik5678", InKeystore: true,
		LastEpoch: &billingapi.Traffic{}, Month: &billingapi.Traffic{}}
	bound := docs()
	bound.Note = "the name is bound to another key, 12D3KooWOther"
	offline := docs()
	offline.Published, offline.Root, offline.Sequence, offline.Updated, offline.Size, offline.LastEpoch, offline.Month =
		false, "", 0, nil, nil, nil, nil
	tests := []struct {
		name string
		rep  sitesReport
		want string
	}{
		{"everything known", sitesReport{Sites: []siteRow{docs(), wiki, blog}, LastEpoch: month.Unix() + 36000, EpochSeconds: 60, Month: &month}, `
NAME                KEY             ROOT            SEQ  UPDATED (UTC)     SIZE             LAST EPOCH        THIS MONTH
docs                12D3Koo…bkjQYR  bafybei…5fbzdi  3    2030-02-01 10:00  1.2 MiB          3.4 KiB / 12 req  1.0 GiB / 40,000 req
wiki                12D3Koo…ik5678  not published   -    -                 -                0 B / 0 req       0 B / 0 req
blog (account key)  12D3Koo…cc1234  bafybei…bzjgly  1    2030-02-01 10:00  not striped yet  0 B / 0 req       10 B / 1 req

last epoch: 2030-02-01 10:00:00–10:01:00 UTC, the last that ended; this month: February 2030 (UTC)
`},
		{"a name bound to another key", sitesReport{Sites: []siteRow{bound}, LastEpoch: month.Unix(), EpochSeconds: 3600, Month: &month}, `
NAME  KEY             ROOT            SEQ  UPDATED (UTC)     SIZE     LAST EPOCH        THIS MONTH
docs  12D3Koo…bkjQYR  bafybei…5fbzdi  3    2030-02-01 10:00  1.2 MiB  3.4 KiB / 12 req  1.0 GiB / 40,000 req

last epoch: 2030-02-01 00:00:00–01:00:00 UTC, the last that ended; this month: February 2030 (UTC)
docs: the name is bound to another key, 12D3KooWOther
`},
		{"origin and billing down", sitesReport{Sites: []siteRow{offline}, Errors: map[string]string{
			"origin":  "the origin at http://127.0.0.1:1 cannot be reached: connection refused",
			"billing": "billing not known: the origin names it; give --billing URL"}}, `
NAME  KEY             ROOT  SEQ  UPDATED (UTC)  SIZE  LAST EPOCH  THIS MONTH
docs  12D3Koo…bkjQYR  -     -    -              -     -           -
billing not known: the origin names it; give --billing URL (bytes served unknown)
the origin at http://127.0.0.1:1 cannot be reached: connection refused (root, sequence and size unknown)
`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := renderSites(&b, &tc.rep); err != nil {
				t.Fatal(err)
			}
			if got := "\n" + b.String(); got != tc.want {
				t.Fatalf("got:%s\nwant:%s", got, tc.want)
			}
		})
	}
}
