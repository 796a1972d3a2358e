//go:build linux

package main

import "golang.org/x/sys/unix"

// raiseFileLimit raises this process's limit of open files to n, the hard
// limit too when allowed (root): at 10,000 edges the router's health
// probes hold up to a descriptor per edge, and so does the simulated
// edges' server on its side. It returns the soft limit
// now in force.
func raiseFileLimit(n uint64) uint64 {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	if lim.Cur >= n {
		return lim.Cur
	}
	want := unix.Rlimit{Cur: n, Max: max(lim.Max, n)}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &want); err != nil {
		want = unix.Rlimit{Cur: lim.Max, Max: lim.Max}
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &want); err != nil {
			return lim.Cur
		}
	}
	return want.Cur
}
