//go:build linux || darwin || freebsd || dragonfly

package storage

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// diskFree returns the bytes free for unprivileged users on the
// filesystem that holds dir (statfs f_bavail × f_bsize).
func diskFree(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(uint64(st.Bavail) * uint64(st.Bsize)), nil
}
