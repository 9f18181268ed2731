package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/misaki-io/misaki/internal/pgtest"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat:
// 100 on every Linux architecture Go builds for.
const clockTicks = 100

// statFields returns /proc/<pid>/stat's fields after the command name
// (field 3, the state, is index 0).
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	return strings.Fields(string(b[i+1:])), nil
}

// cpuSeconds is the process's utime+stime.
func cpuSeconds(pid int) (float64, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64) // field 14
	st, err2 := strconv.ParseUint(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	return float64(ut+st) / clockTicks, nil
}

// pgCPU is the CPU time of the server and every process it has now
// (backends, checkpointer, WAL writer, ...); -1 without a server. A
// backend that exited during a measurement takes its time with it; the
// gateways keep theirs open.
func pgCPU(s *pgtest.Server) float64 {
	if s == nil {
		return -1
	}
	total, _ := cpuSeconds(s.PID)
	ents, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, e := range ents {
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(e)))
		if err != nil {
			continue
		}
		if f, err := statFields(pid); err == nil && len(f) > 1 && f[1] == strconv.Itoa(s.PID) { // field 4, the parent
			sec, _ := cpuSeconds(pid)
			total += sec
		}
	}
	return total
}

// loadAvg is /proc/loadavg's 1-minute figure: how busy the machine was
// besides the benchmark.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}
