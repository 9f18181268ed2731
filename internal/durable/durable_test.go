//go:build linux

package durable

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// BenchmarkFdatasync is one 2,000-byte write and Fdatasync per op, on the
// disk under TMPDIR: appended to a growing file (a size change, so a
// journal commit), or written over a file zeroed in advance (data only).
// cpu-µs/op is the process's CPU, the kernel's share included.
//
//	go test -run '^$' -bench Fdatasync -benchtime 3000x ./internal/durable/
func BenchmarkFdatasync(b *testing.B) {
	for _, mode := range []string{"append", "prezeroed"} {
		b.Run(mode, func(b *testing.B) {
			f, err := os.Create(filepath.Join(b.TempDir(), "log"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			if mode == "prezeroed" {
				f.Write(make([]byte, 64<<20))
				f.Sync()
			}
			buf := make([]byte, 2000)
			var off int64
			c0 := cpu()
			for b.Loop() {
				if mode == "append" {
					_, err = f.Write(buf)
				} else {
					_, err = f.WriteAt(buf, off)
					off += int64(len(buf))
				}
				if err == nil {
					err = Fdatasync(f)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64((cpu()-c0).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}

func cpu() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
