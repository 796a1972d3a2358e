package main

import "testing"

func TestLatencySummary(t *testing.T) {
	s := latencySeries{}
	for i := 1; i <= 20; i++ {
		// Per sample, the slowest of three edges counts.
		s.Samples = append(s.Samples, []float64{0.01, float64(i) / 10, 0.02})
	}
	s.summarize()
	if s.P50 != 1.0 || s.P99 != 2.0 || s.Max != 2.0 {
		t.Fatalf("p50 %v, p99 %v, max %v; want 1, 2, 2 (nearest rank over 20 samples)", s.P50, s.P99, s.Max)
	}
}

func TestPurgeID(t *testing.T) {
	for out, want := range map[string]int64{
		"purged blog (/): change 42\n":       42,
		"purged blog (every path): change 7": 7,
	} {
		if got, err := purgeID(out); err != nil || got != want {
			t.Errorf("purgeID(%q) = %d, %v; want %d", out, got, err, want)
		}
	}
	if _, err := purgeID("purged blog"); err == nil {
		t.Error("purgeID of a line without an ID: no error")
	}
}
