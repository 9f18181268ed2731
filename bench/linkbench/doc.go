// Package linkbench measures how fast a link change on a vehicle's node
// reaches every proxy on it (issue #20: p99 ≤ 100 ms with 50 proxies), with
// the node link agent and, in the same run, the old way, where every proxy
// watches the kernel itself.
//
//	go test -run '^$' -bench LinkChange -benchtime 1x -timeout 30m -v ./bench/linkbench/
//
// It needs root (network namespaces, veth pairs) and iproute2. The node is a
// network namespace with two links, wlan0 and wwan0 (veths whose far ends
// are in a second namespace, up, with addresses), a default route over the
// modem, and one veth per pod to PROXIES (default 50) pod namespaces, as a
// CNI joins pods: the node has 50 interfaces more than its links, as a
// node with 50 pods has. The ends of wlan0 and wwan0 get interface indexes
// of their own: with equal indexes the kernel treats a veth's carrier as a
// non-urgent event and reports it running up to a second after it is set
// up. The real misaki-linkd binary (built as `make build` builds it) runs
// in the node with policy routing on (its default; LINKD_ROUTING=off turns
// it off) and no gateway probes, so a link's state is the kernel's.
//
// The change: the benchmark sets wlan0 down, then up, CHANGES times
// (default 200, alternating), over its own netlink socket in the node
// (RTM_NEWLINK, vishvananda/netlink). t0 is read just before that call;
// the call returns once the kernel has applied the change. After each
// change it waits for every proxy to have it (at most 2 s), then GAP
// (default 150 ms) plus up to half of it at random, so that changes do not
// fall in step with anyone's timers. t1 is when a proxy's link monitor
// (internal/proxy/link, the proxy's own code) holds the new state of the
// link wifi. The figures are t1−t0 over every (change, proxy) pair: p50,
// p90, p99, max, and the pairs that never arrived (none should).
//
// Four sides, one after the other on the same node:
//
//   - agent, processes: misaki-linkd, and PROXIES misaki-proxy processes,
//     one in each pod's namespace with linkAgent.address set to the node's
//     end of its veth and no routes. t1 is the "time" of the proxy's
//     "link state" log line for wifi (JSON on stderr): slog takes it when
//     the record is made, right after the monitor has stored the agent's
//     snapshot and before anything is written, so neither the pipe nor
//     this process's reading adds to it; it is the wall clock, as is t0.
//     Reading each proxy's admin API instead would add a poll interval to
//     every sample.
//   - agent, in-process: the same agent, and PROXIES link.Monitors in this
//     process, each Run on a thread in its pod's namespace, so that its own
//     netlink socket and scans see the pod, as the proxy's do. The monitor
//     dials the agent with a transport of its own from an unpinned
//     goroutine, so the connections (one per monitor) leave from this
//     process's namespace, over a veth to the node (lb<pid> here, host0 in
//     the node), as a pod's do over its own. t1 is read in the monitor's
//     onChange callback. This side leaves out 50 Go runtimes waking at once
//     on 2 cores, and shows what the agent's hop costs by itself.
//   - kernel, processes: no agent; PROXIES misaki-proxy processes in the
//     node's namespace (host network) with links wifi (match wlan0) and
//     modem (wwan0): each wakes on its own netlink socket and rescans with
//     net.Interfaces. t1 as above, from the log.
//   - kernel, in-process: PROXIES link.Monitors with the same links, each
//     Run on a thread in the node's namespace.
//
// Each side starts with one change down and up that is not measured: a
// proxy's link monitor scans once before it subscribes to netlink, so a
// change right after its start waits for its next poll.
//
// Beside t1−t0 it reports, per side, down and up apart; when the kernel
// announced the change (RTM_NEWLINK with wlan0 not up, or up and running,
// as this process reads it from a netlink socket of its own in the node);
// for the agent sides, when the agent published it (the time of
// misaki-linkd's "link" log line, logged right after the watchers are
// woken) and the agent's CPU time over the changes (utime + stime from
// /proc, 10 ms ticks), and its idle CPU time once the changes are over;
// for every side, the proxies' CPU time (the processes', or this process's
// for the in-process sides), and the whole machine's busy time, which
// tells how much others took. MODES (default process,inprocess) and SIDES
// (default agent,kernel) select the sides. The last lines are a Markdown
// table for docs/benchmarks.md.
package linkbench
