package main

import (
	"context"

	"github.com/misaki-io/misaki/internal/pgtest"
)

// startPostgres starts the PostgreSQL server of a configuration that uses
// one: internal/pgtest's, with fsync and full_page_writes back on (pgtest
// turns them off for tests) and synchronous_commit as
// -pg-synchronous-commit says.
func startPostgres(ctx context.Context, syncCommit string) (*pgtest.Server, error) {
	return pgtest.StartServer(ctx, pgtest.Options{Settings: map[string]string{
		"fsync":              "on",
		"full_page_writes":   "on",
		"synchronous_commit": syncCommit,
	}})
}

// pgCPU is the CPU time of the server and every process it has now
// (backends, checkpointer, WAL writer, ...). A backend that exited during
// a measurement takes its time with it; the hubs keep theirs open.
func pgCPU(s *pgtest.Server) float64 {
	total, _ := cpuSeconds(s.PID)
	for _, c := range children(s.PID) {
		sec, _ := cpuSeconds(c)
		total += sec
	}
	return total
}
