//go:build linux

package agentbench

import (
	"fmt"
	"os"
	"strings"
	"time"
)

// goalRSS is issue 18's idle RSS goal, 40 MB (read as 40 MiB: RSS is
// counted in kB pages; 40 MB would be 38.1 MiB and is said beside it).
const goalRSS = 40 << 20

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }
func pct(i idle) string {
	return fmt.Sprintf("%.2f %% (%d ms in %.0f s)", i.percent(), i.CPU.Milliseconds(), i.Window.Seconds())
}

// report is the results as markdown: the table and what it means.
func report(runs []*agentRun, dr driftRun, kr kubectlRun, fr *fluxRun, fluxErr error, built, defaults string, agentBin, fluxBin int64) string {
	var b strings.Builder
	now := time.Now()
	fmt.Fprintf(&b, "# Agent footprint, %s\n\n", now.Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "`go test -run '^$' -bench Footprint -benchtime 1x -timeout 30m -v ./bench/agentbench/`")
	if rows := os.Getenv("AGENT_ROWS"); rows != "" {
		fmt.Fprintf(&b, " with `AGENT_ROWS=%q`", rows)
	}
	fmt.Fprintf(&b, " on %s. misaki-agent built from %s; its defaults: %s.\n", machine(), built, defaults)
	b.WriteString("One cluster for all (kube-apiserver and kube-controller-manager v1.37.2, etcd, kube-scheduler, a kwok node), the hub in the benchmark's process, all on the same cores; each row's objects in their own namespace.\n\n")

	b.WriteString("| | idle RSS | idle CPU | 200 objects applied | all 200 ready | peak RSS during the apply | CPU during the apply | RSS after | idle CPU after |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range runs {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.name(),
			mib(r.idle.Start.RSS), pct(r.idle), secs(r.apply.Applied), secs(r.apply.Ready), mib(r.apply.Peak), secs(r.apply.CPU),
			mib(r.after.Start.RSS), pct(r.after))
	}
	if fr != nil {
		fmt.Fprintf(&b, "| kustomize-controller %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", fr.version,
			mib(fr.idle.Start.RSS), pct(fr.idle), secs(fr.apply.Applied), secs(fr.apply.Ready), mib(fr.apply.Peak), secs(fr.apply.CPU),
			mib(fr.after.Start.RSS), pct(fr.after))
	} else {
		fmt.Fprintf(&b, "| kustomize-controller | not measured: %v | | | | | | | |\n", fluxErr)
	}
	fmt.Fprintf(&b, "| kubectl apply --server-side (v1.37.2, one shot) | — | — | %s | %s | %s | %s | — | — |\n\n",
		secs(kr.apply.Wall), secs(kr.apply.Wall+kr.wait.Wall), mib(max(kr.apply.Peak, kr.wait.Peak)), secs(kr.apply.CPU+kr.wait.CPU))

	a := runs[0]
	verdict := "met"
	if a.idle.Start.RSS > goalRSS {
		verdict = "**not met**"
	}
	fmt.Fprintf(&b, "Goal (issue 18): idle RSS ≤ 40 MB: %s: %s after enrolling and %v settled, %s at the end of the %v idle window (40 MB = 38.1 MiB; 40 MiB = 41.9 MB).\n\n",
		verdict, mib(a.idle.Start.RSS), settle, mib(a.idle.End.RSS), window)

	fmt.Fprintf(&b, "What the agent's memory is: VmRSS is RssAnon (the Go heap, stacks and runtime) + RssFile (the pages of the binary it has touched: the stripped misaki-agent is %.1f MB, kustomize-controller %.1f MB) + RssShmem, from /proc/<pid>/status at the end of each idle window; the Go runtime's gauges are the agent's /metrics, read after the window:\n\n",
		float64(agentBin)/1e6, float64(fluxBin)/1e6)
	b.WriteString("| | RssAnon | RssFile (binary pages) | Go heap in use | heap live (alloc) | next GC at | stacks | runtime total (sys) | goroutines |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range runs {
		for _, s := range []struct {
			when string
			m    mem
			g    metrics
		}{{"idle", r.idle.End, r.heapIdle}, {"after the apply", r.after.End, r.heapAfter}} {
			name := r.name() + ", " + s.when
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %.0f |\n", name, mib(s.m.Anon), mib(s.m.File),
				mib(int64(s.g["go_memstats_heap_inuse_bytes"])), mib(int64(s.g["go_memstats_heap_alloc_bytes"])),
				mib(int64(s.g["go_memstats_next_gc_bytes"])), mib(int64(s.g["go_memstats_stack_inuse_bytes"])),
				mib(int64(s.g["go_memstats_sys_bytes"])), s.g["go_goroutines"])
		}
	}
	if fr != nil {
		fmt.Fprintf(&b, "| kustomize-controller idle | %s | %s | | | | | | |\n", mib(fr.idle.End.Anon), mib(fr.idle.End.File))
	}
	b.WriteString("\n")

	passes := int(window / drift)
	base := a.after.CPU.Seconds() / a.after.Window.Seconds() * dr.restart.Window.Seconds()
	per := (dr.restart.CPU.Seconds() - base) / float64(passes)
	fmt.Fprintf(&b, "Drift: with the default --drift-interval (5m) nothing runs in the idle windows. Restarted with --drift-interval %v (its start re-applies the ledger's 200 objects once, then every %v), the agent used %s of CPU over %v (%d passes at that interval): about %.2f s per pass over the 200 objects beyond idle, RSS %s, peak %s since the restart.\n\n",
		drift, drift, secs(dr.restart.CPU), dr.restart.Window.Round(time.Second), passes, per, mib(dr.restart.End.RSS), mib(dr.restart.End.HWM))

	b.WriteString("\"All 200 ready\" waits on the cluster as much as on the applier: the Deployment's pod is created by kube-controller-manager (through a ReplicaSet), scheduled by kube-scheduler and marked running and ready by kwok. From the objects' timestamps in each row's namespace:")
	for _, r := range runs {
		fmt.Fprintf(&b, " %s: %s;", r.name(), r.pods)
	}
	if fr != nil {
		fmt.Fprintf(&b, " kustomize-controller: %s;", fr.pods)
	}
	fmt.Fprintf(&b, " kubectl: %s.\n\n", kr.pods)

	b.WriteString("How it is measured: RSS is VmRSS, peak VmHWM after writing 5 to /proc/<pid>/clear_refs at the start of the apply; CPU is utime+stime from /proc/<pid>/stat (10 ms ticks); kubectl's are its wait4 rusage (ru_maxrss, utime+stime). ")
	b.WriteString("Idle: after the process started (the agent: logged \"agent starting\", enrolled) and settled 20 s, CPU over the next 30 s; after: 5 s after the apply, CPU over 30 s. ")
	b.WriteString("The agent's apply: from POST /v1/deployments (the gadget chart, bulk: 194; the hub renders, signs and wakes the agent's long-poll) to its \"applied\" log line, and to the twin's report Phase Healthy at that revision (its readiness poll is every 2 s). ")
	b.WriteString("kustomize-controller's: from creating the Kustomization (wait: true, prune: true) over a GitRepository whose artifact, a tarball of the same 200 objects, the benchmark serves on loopback (no source-controller runs; its CRDs are stand-ins that keep every field) to its \"server-side apply completed\" log line, and to Ready=True at that revision. It runs with its defaults (QPS 50, burst 300) and without leader election, as the agent has none; the agent runs with its defaults (above). ")
	b.WriteString("kubectl: apply --server-side of the 200 objects as one file, then rollout status of the Deployment (all ready: the sum of the two; peak the larger). ")
	b.WriteString("Namespaces are created beforehand for the peers (the agent creates those its objects use); the CRD is shared, applied first by the agent.\n")
	return b.String()
}
