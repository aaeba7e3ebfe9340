//go:build linux

package bench

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// socketSlabs are the kernel's slab caches that grow with each TCP socket
// held open through a descriptor: the socket itself (TCP), its inode
// (sock_inode_cache), the open file and its dentry, and, for a socket in an
// epoll set, its epitem and poll wait-queue entry.
var socketSlabs = []string{"TCP", "TCPv6", "sock_inode_cache", "filp", "dentry", "eventpoll_epi", "eventpoll_pwq"}

// readSlabs returns the bytes of allocated objects (active objects times
// object size) in each of socketSlabs, from /proc/slabinfo, which only root
// can read; nil if it cannot be read. The counts are the whole machine's:
// anything else running adds noise.
func readSlabs() map[string]int64 {
	f, err := os.Open("/proc/slabinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	m := make(map[string]int64, len(socketSlabs))
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 4 {
			continue
		}
		for _, name := range socketSlabs {
			if fs[0] == name {
				active, err1 := strconv.ParseInt(fs[1], 10, 64)
				size, err2 := strconv.ParseInt(fs[3], 10, 64)
				if err1 == nil && err2 == nil {
					m[name] = active * size
				}
			}
		}
	}
	if len(m) == 0 {
		return nil
	}
	return m
}

// slabDelta returns, per cache and in all, the growth from before to after
// divided by n; nil if either reading is missing.
func slabDelta(before, after map[string]int64, n float64) (per map[string]float64, total float64) {
	if before == nil || after == nil {
		return nil, 0
	}
	per = make(map[string]float64, len(after))
	for name, b := range after {
		d := float64(b-before[name]) / n
		per[name] = d
		total += d
	}
	return per, total
}

// fmtSlabs lists per-cache figures in socketSlabs' order.
func fmtSlabs(m map[string]float64) string {
	var b strings.Builder
	for _, name := range socketSlabs {
		if v, ok := m[name]; ok {
			if b.Len() > 0 {
				b.WriteString(", ")
			}
			b.WriteString(name + " " + strconv.FormatFloat(v, 'f', 0, 64))
		}
	}
	return b.String()
}
