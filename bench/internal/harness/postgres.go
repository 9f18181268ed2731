package harness

import (
	"context"

	"github.com/misaki-io/misaki/internal/pgtest"
)

// StartPostgres starts a PostgreSQL server for a configuration that uses
// one: internal/pgtest's, with fsync and full_page_writes back on (pgtest
// turns them off for tests) and synchronous_commit as syncCommit says.
func StartPostgres(ctx context.Context, syncCommit string) (*pgtest.Server, error) {
	return pgtest.StartServer(ctx, pgtest.Options{Settings: map[string]string{
		"fsync":              "on",
		"full_page_writes":   "on",
		"synchronous_commit": syncCommit,
	}})
}

// PostgresCPU is the CPU time of the server and every process it has now
// (backends, checkpointer, WAL writer, ...); -1 without a server (s nil).
// A backend that exited during a measurement takes its time with it, so
// the clients measured should keep theirs open.
func PostgresCPU(s *pgtest.Server) float64 {
	if s == nil {
		return -1
	}
	total, _ := CPUSeconds(s.PID)
	for _, c := range Children(s.PID) {
		sec, _ := CPUSeconds(c)
		total += sec
	}
	return total
}
