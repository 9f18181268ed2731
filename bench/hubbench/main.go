// Command hubbench measures the hub (issue 17) with a simulated fleet.
//
// For each configuration it runs the real misaki-hub binary as its own
// process (or two, sharing PostgreSQL), creates N vehicles, gives each a
// bootstrap token and enrols it with its own key and CSR as an agent does,
// and starts one in-process agent per vehicle: a goroutine with its own
// client certificate and its own mTLS connection (HTTP/1.1) that, through
// internal/hubclient, long-polls
// GET /v1/vehicles/{id}/desired?after=N&wait=30s, verifies each new
// revision with internal/trust's Verifier (its signature from the trust
// root, vehicle, half, revision and digest), and reports it applied with
// PUT /v1/vehicles/{id}/reported. One deployment of the shuttle test chart
// selects every vehicle; all vehicles have the same facts and allocatable,
// so one render serves the fleet and placement runs per vehicle.
//
// Setup is not timed: enrolment, the agents' connections, and the first
// rollout (the deployment created, revision 1 delivered and reported). The
// timed phase changes the deployment's values (PUT /v1/deployments/shuttle)
// and ends when every vehicle has fetched, verified and reported the new
// revision. It reports the total, the wake latency (from the PUT's return
// to each vehicle's long-poll answering the new revision: p50, p99, max),
// each hub process's CPU (utime+stime from /proc over the timed phase) and
// peak RSS (VmHWM), PostgreSQL's CPU, the agents' CPU, and the render
// cache and revision counters from each hub's /metrics.
//
// Configurations (-configs): sqlite (one hub, the default store),
// postgres (one hub on a PostgreSQL server this program starts from
// Debian's binaries with internal/pgtest, fsync on), and postgres-2 (two
// hub replicas on that server sharing the keys and the fleet CA; vehicles
// alternate between them; the change is sent to replica 1; the replica
// holding the issuing lease renders and signs).
//
//	go run ./bench/hubbench                                # 10,000 vehicles, all three
//	go run ./bench/hubbench -vehicles 500 -configs sqlite  # a quick look
//
// After the configurations it measures what signing (trust.Keys.Sign) and
// verifying (trust.Verifier.Verify) one of the run's documents costs, per
// CPU-second of one goroutine. It prints progress on stderr and a
// Markdown table on stdout; go test ./bench/hubbench/ runs it with 200
// vehicles (50 under -race).
package main

import "github.com/misaki-io/misaki/bench/internal/harness"

var program = harness.Program[options, *report]{Name: "hubbench", Parse: parse, Bench: bench, Print: printResults}

func main() { program.Main() }
