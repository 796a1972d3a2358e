package edge

import (
	"testing"
	"time"
)

func TestResponseCacheExpiry(t *testing.T) {
	c := newResponseCache(1 << 20)
	t0 := time.Now()
	c.add("site", &response{body: []byte("v1"), expires: t0.Add(time.Minute)})
	c.add("cid", &response{body: []byte("immutable")})
	steps := []struct {
		name string
		key  string
		at   time.Time
		hit  bool
	}{
		{"fresh", "site", t0.Add(30 * time.Second), true},
		{"expired: first asker refreshes", "site", t0.Add(61 * time.Second), false},
		{"others get it stale meanwhile", "site", t0.Add(62 * time.Second), true},
		{"not past the grace", "site", t0.Add(time.Minute + staleGrace + time.Second), false},
		{"gone", "site", t0.Add(time.Minute + staleGrace + 2*time.Second), false},
		{"immutable never expires", "cid", t0.Add(1000 * time.Hour), true},
	}
	for _, st := range steps {
		if _, hit := c.get(st.key, st.at); hit != st.hit {
			t.Fatalf("%s: hit = %v, want %v", st.name, hit, st.hit)
		}
	}
	// A refresh replaces the entry.
	c.add("site", &response{body: []byte("v2"), expires: t0.Add(10 * time.Minute)})
	if r, ok := c.get("site", t0.Add(5*time.Minute)); !ok || string(r.body) != "v2" {
		t.Fatal("refreshed entry not served")
	}
	// The byte bound holds.
	small := newResponseCache(2000)
	for i := range 10 {
		small.add(string(rune('a'+i)), &response{body: make([]byte, 500)})
	}
	if small.size() > 2000 {
		t.Fatalf("cache holds %d bytes, bound 2000", small.size())
	}
}
