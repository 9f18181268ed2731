// Package holdbench measures what holding requests costs the edge proxy.
//
// BenchmarkHold10k builds the real misaki-proxy binary, runs it on loopback in
// front of an upstream served by the test process, takes the route's only link
// down through the admin API and opens 10,000 concurrent requests, each on its
// own connection. Once the proxy reports all of them held it reads the proxy's
// RSS (from /proc), goroutines and heap in use (from /metrics), brings the link
// back up, and checks that every request is delivered exactly once and answered
// with the upstream's response. It then reports the memory per held request and
// whether goroutines return to the baseline after the drain, and prints a
// Markdown table for docs/benchmarks.md:
//
//	go test -run '^$' -bench Hold10k -benchtime 1x -v ./bench/holdbench/
//
// The package has only a benchmark, and only on Linux.
package holdbench
