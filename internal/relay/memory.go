package relay

import (
	"os"
	"path"
	"strconv"
	"strings"
)

// Where DefaultQueueBudget looks for the memory this process may use.
const (
	meminfoFile      = "/proc/meminfo"
	selfCgroupFile   = "/proc/self/cgroup"
	cgroupV2Root     = "/sys/fs/cgroup"        // memory.max in each group
	cgroupV1Root     = "/sys/fs/cgroup/memory" // memory.limit_in_bytes in each group
	maxCgroupDepth   = 64                      // bound on the walk up a cgroup path
	queueBudgetShare = 4                       // the default budget is 1/queueBudgetShare of memory
)

// DefaultQueueBudget is Config.QueueBudgetBytes when left zero: a quarter of
// the memory this process may use, which is the smaller of the machine's
// (MemTotal in /proc/meminfo) and its control group's limit (cgroup v2
// memory.max, or v1 memory.limit_in_bytes, of the process's group and every
// group above it), or FallbackQueueBudgetBytes when neither can be read (not
// Linux, or /proc hidden).
func DefaultQueueBudget() int64 {
	if mem := memoryLimit(os.ReadFile); mem > 0 {
		return mem / queueBudgetShare
	}
	return FallbackQueueBudgetBytes
}

// memoryLimit returns the memory this process may use in bytes, as read
// through readFile (os.ReadFile outside tests), or 0 if unknown.
func memoryLimit(readFile func(string) ([]byte, error)) int64 {
	limit := memTotal(readFile)
	if b, err := readFile(selfCgroupFile); err == nil {
		for line := range strings.Lines(string(b)) {
			// "hierarchy-id:controllers:path"; v2 is "0::path".
			parts := strings.SplitN(strings.TrimSpace(line), ":", 3)
			if len(parts) != 3 {
				continue
			}
			var root, file string
			switch {
			case parts[0] == "0" && parts[1] == "":
				root, file = cgroupV2Root, "memory.max"
			case hasController(parts[1], "memory"):
				root, file = cgroupV1Root, "memory.limit_in_bytes"
			default:
				continue
			}
			if n := cgroupLimit(readFile, root, parts[2], file); n > 0 && (limit == 0 || n < limit) {
				limit = n
			}
		}
	}
	return limit
}

func hasController(list, name string) bool {
	for c := range strings.SplitSeq(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}

// memTotal returns MemTotal from /proc/meminfo in bytes, or 0.
func memTotal(readFile func(string) ([]byte, error)) int64 {
	b, err := readFile(meminfoFile)
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		// "MemTotal:       24683568 kB"
		rest, ok := strings.CutPrefix(line, "MemTotal:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || kb <= 0 || kb > 1<<53 {
			return 0
		}
		return kb << 10
	}
	return 0
}

// cgroupLimit returns the smallest limit set in file for group and each
// group above it under root, or 0 if none is set ("max", absent, unreadable).
// A process in a container often sees its own group as "/" or as a path
// that does not exist in its view of root; both end at root's own file.
func cgroupLimit(readFile func(string) ([]byte, error), root, group, file string) int64 {
	var limit int64
	p := path.Clean("/" + group)
	for range maxCgroupDepth {
		if b, err := readFile(path.Join(root, p, file)); err == nil {
			s := strings.TrimSpace(string(b))
			if n, err := strconv.ParseInt(s, 10, 64); err == nil && n > 0 && (limit == 0 || n < limit) {
				limit = n
			}
		}
		if p == "/" {
			break
		}
		p = path.Dir(p)
	}
	return limit
}
