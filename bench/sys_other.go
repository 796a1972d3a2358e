//go:build !linux

package main

import "time"

// procCPU is unknown outside Linux.
func procCPU(pid int) (time.Duration, bool) { return 0, false }

// procTreeCPU is unknown outside Linux.
func procTreeCPU(pid int) (time.Duration, bool) { return 0, false }

// selfCPU is unknown outside Linux.
func selfCPU() (time.Duration, bool) { return 0, false }

// fsInfo cannot tell filesystems apart outside Linux.
func fsInfo(path string) (name string, inMemory bool, err error) { return "unknown", false, nil }

// syncFilesystems is a no-op outside Linux.
func syncFilesystems() {}

// allowedCPUs is unknown outside Linux: nothing is pinned.
func allowedCPUs() []int { return nil }

// procReapedCPU is unknown outside Linux.
func procReapedCPU(pid int) (time.Duration, bool) { return 0, false }
