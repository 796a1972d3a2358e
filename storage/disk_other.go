//go:build !(linux || darwin || freebsd || dragonfly)

package storage

import "errors"

// diskFree cannot tell the free space on this system; New then accepts
// the configured capacity unchecked.
func diskFree(string) (int64, error) {
	return 0, errors.ErrUnsupported
}
