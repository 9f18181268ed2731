// Command gatewaybench measures the cloud gateway's de-duplication (issue
// #20, item 4) scaled out on PostgreSQL beside one replica on the local
// store, in the same run.
//
// For each configuration it runs the real misaki-gateway binary
// (misaki-proxy's gateway role with the shared store linked; one process per
// replica), in front of an in-process service that answers 201 with a
// small JSON body and counts its deliveries per key. Clients with the
// vehicle's certificate (mutual TLS, HTTP/1.1 keep-alive, -conns of them
// in a closed loop) POST a small body with an Idempotency-Key: a new key
// (time-ordered, as the edge assigns them) to the replicas in turn, or,
// with probability -repeat, a key already answered, to another replica
// than the one that answered it. After -warmup, -duration is timed: the
// requests answered per second (new and repeats), their latency (p50,
// p99, max, from each request's send to its answer's last byte), the CPU
// of the gateways and of PostgreSQL over the timed phase, and the check
// that matters: deliveries past the first for any key (must be 0).
//
// Configurations (-configs): local-1 (one replica, the local store in a
// temp dir: framelog WAL + bbolt, fdatasync per group), postgres-1 (one
// replica on PostgreSQL) and postgres-3 (three replicas on one
// PostgreSQL). PostgreSQL is a server this program starts with
// internal/pgtest from Debian's binaries, fsync and full_page_writes on,
// synchronous_commit as -pg-synchronous-commit says (on, the default: an
// answer is on disk before the gateway relays it, as the local store's
// is); each configuration gets a fresh database.
//
//	go run ./bench/gatewaybench                           # all three, 10 s each
//	go run ./bench/gatewaybench -duration 3s -configs local-1,postgres-3
//
// It prints progress on stderr and a Markdown table on stdout; go test
// ./bench/gatewaybench/ runs it for a second per configuration.
package main

import "github.com/misaki-io/misaki/bench/internal/harness"

var program = harness.Program[options, *report]{Name: "gatewaybench", Parse: parse, Bench: bench, Print: printResults}

func main() { program.Main() }
