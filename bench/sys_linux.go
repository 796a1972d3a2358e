//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// clockTicks is USER_HZ, the unit of the CPU times in /proc/PID/stat: 100
// on every Linux architecture Go supports.
const clockTicks = 100

// procCPU returns the user plus system CPU time process pid has used so
// far, from /proc/PID/stat (10 ms resolution), or false if unknown.
func procCPU(pid int) (time.Duration, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	// The command name (field 2) may hold spaces and parentheses: fields
	// are counted after its closing parenthesis, which starts at field 3.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, false
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, true
}

// procReapedCPU returns the user plus system CPU time of pid's children
// that have exited and been waited for (cutime + cstime in /proc/PID/stat),
// or false if unknown: PostgreSQL's backends, which come and go with the
// client's connections.
func procReapedCPU(pid int) (time.Duration, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 15 {
		return 0, false
	}
	cutime, err1 := strconv.ParseInt(f[13], 10, 64) // field 16
	cstime, err2 := strconv.ParseInt(f[14], 10, 64) // field 17
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(cutime+cstime) * time.Second / clockTicks, true
}

// procTreeCPU returns procCPU of pid plus that of its child processes
// (nginx's workers, which serve while the master waits), or false if pid's
// own is unknown.
func procTreeCPU(pid int) (time.Duration, bool) {
	total, ok := procCPU(pid)
	if !ok {
		return 0, false
	}
	// Each thread lists the children it forked.
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if child, err := strconv.Atoi(f); err == nil {
				if t, ok := procCPU(child); ok {
					total += t
				}
			}
		}
	}
	return total, true
}

// selfCPU returns the user plus system CPU time of this process so far.
func selfCPU() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}

// syncFilesystems flushes every filesystem's dirty data (sync(2)), so a
// disk phase does not pay for the write-back of what came before it.
func syncFilesystems() { syscall.Sync() }

// Filesystem magic numbers (statfs f_type) of the filesystems the erasure
// benchmark names; see statfs(2).
const (
	magicTmpfs    = 0x01021994
	magicRamfs    = 0x858458f6
	magicExt4     = 0xef53 // ext2/3/4
	magicXFS      = 0x58465342
	magicBtrfs    = 0x9123683e
	magicOverlay  = 0x794c7630
	magicZFS      = 0x2fc12fc1
	magicF2FS     = 0xf2f52010
	magicNFS      = 0x6969
	magicFUSE     = 0x65735546
	magicBcachefs = 0xca451a4e
)

// fsInfo describes the filesystem holding path: a name for its type and
// whether it lives in memory (tmpfs, ramfs), where fsync is a no-op and a
// disk benchmark means nothing.
func fsInfo(path string) (name string, inMemory bool, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return "", false, fmt.Errorf("statfs %s: %w", path, err)
	}
	name, inMemory = fsTypeName(uint32(st.Type))
	return name, inMemory, nil
}

// fsTypeName names a statfs f_type.
func fsTypeName(magic uint32) (name string, inMemory bool) {
	switch magic {
	case magicTmpfs:
		return "tmpfs", true
	case magicRamfs:
		return "ramfs", true
	case magicExt4:
		return "ext4", false
	case magicXFS:
		return "xfs", false
	case magicBtrfs:
		return "btrfs", false
	case magicOverlay:
		return "overlayfs", false
	case magicZFS:
		return "zfs", false
	case magicF2FS:
		return "f2fs", false
	case magicNFS:
		return "nfs", false
	case magicFUSE:
		return "fuse", false
	case magicBcachefs:
		return "bcachefs", false
	}
	return fmt.Sprintf("fs-0x%x", magic), false
}

// allowedCPUs lists the CPUs this process may run on (its affinity mask,
// which a container's cpuset narrows), in order.
func allowedCPUs() []int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil
	}
	var out []int
	for cpu := 0; cpu < len(set)*64 && len(out) < set.Count(); cpu++ {
		if set.IsSet(cpu) {
			out = append(out, cpu)
		}
	}
	return out
}
