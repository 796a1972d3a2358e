//go:build !linux

package main

// raiseFileLimit leaves the limit of open files as it is outside Linux
// and reports it unknown.
func raiseFileLimit(n uint64) uint64 { return 0 }
