package edge

import (
	"context"
	"testing"
)

// TestNewConfig: New fills the zero values with the defaults and refuses
// what it cannot run with.
func TestNewConfig(t *testing.T) {
	tests := []struct {
		name      string
		cfg       Config
		shouldErr bool
		domain    string
		memory    int64
	}{
		{name: "defaults", cfg: Config{Origin: "http://127.0.0.1:1/"}, domain: DefaultDomain, memory: DefaultMemoryBytes},
		{name: "set values", cfg: Config{Origin: "http://127.0.0.1:1", Domain: "CDN.Example.", MemoryBytes: 1 << 20},
			domain: "cdn.example", memory: 1 << 20},
		{name: "no origin", cfg: Config{}, shouldErr: true},
		{name: "negative memory", cfg: Config{Origin: "http://127.0.0.1:1", MemoryBytes: -1}, shouldErr: true},
		{name: "bad DNSLink", cfg: Config{Origin: "http://127.0.0.1:1", DNSLinks: map[string]string{"a.example": "/dns/x"}},
			shouldErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := New(context.Background(), tc.cfg)
			if (err != nil) != tc.shouldErr {
				t.Fatalf("err = %v, want error: %v", err, tc.shouldErr)
			}
			if tc.shouldErr {
				return
			}
			if e.cfg.Domain != tc.domain || e.cfg.MemoryBytes != tc.memory || e.cfg.State.memoryBytes != tc.memory {
				t.Errorf("domain %q, memory %d (State %d); want %q, %d", e.cfg.Domain, e.cfg.MemoryBytes,
					e.cfg.State.memoryBytes, tc.domain, tc.memory)
			}
		})
	}
}
