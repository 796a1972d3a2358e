package dnsroute

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/boxo/ipns"
	"github.com/ipfs/go-cid"
	"github.com/miekg/dns"
	"github.com/multiformats/go-multihash"
	"github.com/topcdn/topcdn/identity"
	"github.com/topcdn/topcdn/internal/testkit"
	"github.com/topcdn/topcdn/originapi"
)

// TestNameStreamAddsNames: a name published after the router read the
// origin's list answers as soon as its change is streamed, though the
// list is not read again for an hour; a change signed by another key than
// the origin's is not applied.
func TestNameStreamAddsNames(t *testing.T) {
	originKey, publisher, forger := testkit.Key(t, 1), testkit.Key(t, 2), testkit.Key(t, 3)
	root, _ := cid.Prefix{Version: 1, Codec: cid.Raw, MhType: multihash.SHA2_256, MhLength: -1}.Sum([]byte("docs"))
	var (
		mu      sync.Mutex
		changes []originapi.NameChange
		wake    = make(chan struct{})
	)
	// add streams a change of name to the IPNS name of key, its record
	// signed by recordKey.
	add := func(name string, key, recordKey *identity.Key) {
		raw := testkit.IPNSRecord(t, recordKey, root, 1, time.Now().Add(time.Hour), ipns.WithMetadata(map[string]any{originapi.RecordNameKey: name}))
		mu.Lock()
		defer mu.Unlock()
		changes = append(changes, originapi.NameChange{ID: int64(len(changes) + 1), Kind: originapi.ChangeRecord,
			Name: name, IPNS: ipns.NameFromPeer(key.ID).String(), Record: raw, At: time.Now().UTC()})
		close(wake)
		wake = make(chan struct{})
	}
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case NamesPath:
			w.Write([]byte("[]"))
		case "/healthz":
			json.NewEncoder(w).Encode(map[string]string{"peer_id": originKey.ID.String()})
		case "/api/v1/names/changes":
			mu.Lock()
			page := originapi.NameChanges{Last: int64(len(changes)), Changes: []originapi.NameChange{}}
			page.Since, page.To = page.Last, page.Last
			if s := r.URL.Query().Get("since"); s != "" {
				json.Unmarshal([]byte(s), &page.Since)
				page.To = page.Since
				for _, c := range changes[page.Since:] {
					page.Changes = append(page.Changes, c)
					page.To = c.ID
				}
			}
			wk := wake
			mu.Unlock()
			if len(page.Changes) == 0 {
				select {
				case <-wk:
					http.Error(w, "changed; ask again", http.StatusServiceUnavailable)
					return
				case <-time.After(200 * time.Millisecond):
				}
			}
			env, _ := originKey.Sign(originapi.TypeNameChanges, page)
			json.NewEncoder(w).Encode(env)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(origin.Close)
	tr := startRouter(t, Config{Origin: origin.URL, NamesInterval: time.Hour})
	rcode := func(name string) int {
		m := new(dns.Msg)
		m.SetQuestion(name+"."+testZone, dns.TypeA)
		return tr.query(t, "udp", "", m).Rcode
	}
	testkit.WaitFor(t, 10*time.Second, "the stream followed", tr.streamUp)
	if rc := rcode("docs"); rc != dns.RcodeNameError {
		t.Fatalf("docs before its change: %s, want NXDOMAIN", dns.RcodeToString[rc])
	}
	add("forged", publisher, forger) // the publisher's name, a record it did not sign
	add("docs", publisher, publisher)
	testkit.WaitFor(t, 10*time.Second, "docs answered", func() bool { return rcode("docs") != dns.RcodeNameError })
	// Changes apply in order: the forged one came first, and was skipped.
	if rc := rcode("forged"); rc != dns.RcodeNameError {
		t.Fatalf("a name streamed with a forged record: %s, want NXDOMAIN", dns.RcodeToString[rc])
	}
}
