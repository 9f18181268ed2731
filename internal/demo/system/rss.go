package system

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"sync"
	"time"
)

// treeRSS sums the resident memory of this process and every process
// under it (the clusters, the hub, the agents, the proxies), from /proc.
// It returns 0 processes where there is no /proc.
func treeRSS() (procs int, bytes int64) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, 0
	}
	children := map[int][]int{}
	rss := map[int]int64{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ppid, pages, ok := readStat(pid)
		if !ok {
			continue
		}
		children[ppid] = append(children[ppid], pid)
		rss[pid] = pages
	}
	page := int64(os.Getpagesize())
	queue := []int{os.Getpid()}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		procs++
		bytes += rss[pid] * page
		queue = append(queue, children[pid]...)
	}
	return procs, bytes
}

// readStat reads a process's parent and resident pages from
// /proc/<pid>/stat.
func readStat(pid int) (ppid int, pages int64, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	// The command name, in parentheses, may hold spaces: fields start
	// after the last ')'. Then: state ppid ... with rss the 22nd after it.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 22 {
		return 0, 0, false
	}
	ppid, err1 := strconv.Atoi(string(f[1]))
	pages, err2 := strconv.ParseInt(string(f[21]), 10, 64)
	return ppid, pages, err1 == nil && err2 == nil
}

// rssPeak samples treeRSS every second and keeps the peak.
type rssPeak struct {
	mu           sync.Mutex // guards the fields below
	procs, peakP int
	now, peak    int64
}

func (r *rssPeak) run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		n, b := treeRSS()
		r.mu.Lock()
		r.procs, r.now = n, b
		if b > r.peak {
			r.peak, r.peakP = b, n
		}
		r.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// get returns the last sample and the peak.
func (r *rssPeak) get() (procs int, now int64, peakProcs int, peak int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.procs, r.now, r.peakP, r.peak
}

func mib(b int64) string { return strconv.FormatInt(b>>20, 10) + " MiB" }
