package storage

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
)

// TestCapacityLargerThanDisk: New refuses a capacity the data directory's
// filesystem cannot hold (read with statfs), naming both figures, and
// accepts one it can.
func TestCapacityLargerThanDisk(t *testing.T) {
	free, err := diskFree(t.TempDir())
	if err != nil {
		t.Skipf("free disk space unknown here: %v", err)
	}
	tests := []struct {
		name     string
		capacity int64
		wantErr  bool
	}{
		{"1 EiB", 1 << 60, true},
		{"twice the free space", 2*free + 1<<30, true},
		{"1 MiB", 1 << 20, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k := newTestKeys(t)
			s, err := New(context.Background(), Config{DataDir: t.TempDir(), Key: k.peer, OriginID: k.origin.ID, Capacity: tc.capacity})
			if !tc.wantErr {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				s.Close()
				return
			}
			if err == nil {
				s.Close()
				t.Fatalf("capacity %d accepted with %d bytes free", tc.capacity, free)
			}
			if !errors.Is(err, ErrCapacityTooLarge) {
				t.Errorf("error %v, want ErrCapacityTooLarge", err)
			}
			// Both figures: the capacity asked and what the disk holds.
			if msg := err.Error(); !strings.Contains(msg, "capacity") || !strings.Contains(msg, " bytes), but") ||
				!strings.Contains(msg, strconv.FormatInt(tc.capacity, 10)) || !strings.Contains(msg, "free plus") {
				t.Errorf("error %q does not name the capacity and the free space", msg)
			}
		})
	}
}

// TestFitCapacity: a capacity set explicitly that does not fit is
// refused; the default one is lowered to what fits; shards already held
// count as room.
func TestFitCapacity(t *testing.T) {
	const gib = 1 << 30
	tests := []struct {
		name            string
		capacity        int64
		explicit        bool
		free, used      int64
		want            int64
		capped, wantErr bool
	}{
		{"fits", 10 * gib, true, 20 * gib, 0, 10 * gib, false, false},
		{"fits with the shards held", 10 * gib, true, 2 * gib, 8 * gib, 10 * gib, false, false},
		{"explicit, too large", 50 * gib, true, 20 * gib, 1 * gib, 0, false, true},
		{"default, too large: lowered", 10 * gib, false, 3 * gib, 1 * gib, 4 * gib, true, false},
		{"default, fits", 10 * gib, false, 30 * gib, 0, 10 * gib, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, capped, err := fitCapacity(tc.capacity, tc.explicit, tc.free, tc.used, "/data")
			if (err != nil) != tc.wantErr || got != tc.want || capped != tc.capped {
				t.Fatalf("fitCapacity = %d, %v, %v; want %d, %v, error %v", got, capped, err, tc.want, tc.capped, tc.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "50 GiB (53687091200 bytes)") || err != nil && !strings.Contains(err.Error(), "21 GiB (22548578304 bytes)") {
				t.Errorf("error %q, want both figures: 50 GiB asked, 21 GiB held", err)
			}
		})
	}
}
