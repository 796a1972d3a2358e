package namestream_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/topcdn/topcdn/internal/testkit"
	"github.com/topcdn/topcdn/namestream"
	"github.com/topcdn/topcdn/originapi"
)

// FuzzPage feeds arbitrary page bodies, signed by the origin, through
// OpenPage and Verify: whatever a (compromised) origin signs, the follower
// must neither panic nor pass on a change that is not a verified record or
// purge, and an accepted page keeps the stream's shape.
func FuzzPage(f *testing.F) {
	origin := testkit.Key(f, 1)
	blog := site{key: testkit.Key(f, 2), name: "blog"}
	rec := blog.record(f, blog.key, "blog", testCID("seed"), 1)
	rec.ID = 1
	purge := blog.purge(f, blog.key, "/a/")
	purge.ID = 2
	for _, page := range []originapi.NameChanges{
		{Since: 0, To: 0, Last: 0, Changes: []originapi.NameChange{}},
		{Since: 0, To: 2, Last: 2, Changes: []originapi.NameChange{rec, purge}},
		{Since: 3, To: 9, Last: 9, Reset: true, Changes: []originapi.NameChange{}},
	} {
		b, err := json.Marshal(page)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"since":1,"to":0,"last":0,"changes":null}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var page originapi.NameChanges
		if json.Unmarshal(body, &page) != nil {
			return
		}
		env, err := origin.Sign(originapi.TypeNameChanges, page)
		if err != nil {
			return
		}
		got, err := namestream.OpenPage(env, origin.ID)
		if err != nil {
			return
		}
		prev := got.Since
		for _, c := range got.Changes {
			if c.ID <= prev {
				t.Fatalf("accepted change %d after %d", c.ID, prev)
			}
			prev = c.ID
			v, err := namestream.Verify(c, time.Now())
			if err != nil {
				continue
			}
			switch v.Kind {
			case namestream.Record:
				if len(v.Record) == 0 || v.IPNS.String() != c.IPNS {
					t.Fatalf("verified record %+v", v)
				}
			case namestream.Purge:
				if v.Purge == nil || v.Purge.IPNS != c.IPNS {
					t.Fatalf("verified purge %+v", v)
				}
			default:
				t.Fatalf("verified change of kind %q", v.Kind)
			}
		}
		if got.To > got.Last {
			t.Fatalf("accepted page to %d past last %d", got.To, got.Last)
		}
	})
}
