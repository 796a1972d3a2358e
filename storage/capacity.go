package storage

import (
	"errors"
	"fmt"

	"github.com/dustin/go-humanize"
)

// ErrCapacityTooLarge is returned by New when Config.Capacity is more than
// the data directory's filesystem can hold: its free space plus the
// shards already held.
var ErrCapacityTooLarge = errors.New("capacity larger than the disk")

// fitCapacity checks capacity against room, what the filesystem can hold
// for shards (free bytes plus used, the shards already held). A capacity
// set explicitly that does not fit is refused, naming both figures; the
// default one is lowered to room (capped reports it).
func fitCapacity(capacity int64, explicit bool, free, used int64, dir string) (fit int64, capped bool, err error) {
	room := free + used
	if capacity <= room {
		return capacity, false, nil
	}
	if !explicit {
		return room, true, nil
	}
	return 0, false, fmt.Errorf("storage: %w: capacity %s (%d bytes), but the filesystem of %s can hold only %s (%d bytes): %s free plus %s of shards already held; lower the capacity or free disk space",
		ErrCapacityTooLarge, humanize.IBytes(uint64(capacity)), capacity, dir,
		humanize.IBytes(uint64(room)), room, humanize.IBytes(uint64(free)), humanize.IBytes(uint64(used)))
}
