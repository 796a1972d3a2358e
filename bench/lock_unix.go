//go:build unix

package main

import (
	"errors"
	"os"
	"syscall"
)

// tryLock attempts to take an exclusive advisory lock on f without
// blocking. It reports whether the lock was acquired; closing f releases it.
func tryLock(f *os.File) (bool, error) {
	err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return false, nil
	}
	return err == nil, err
}
