// Package agentbench measures the vehicle agent's footprint (issue 18):
// the misaki-agent binary, built as make cross builds it, enrolled with a
// real hub and applying to a real cluster (kube-apiserver, etcd,
// kube-controller-manager, kube-scheduler and a kwok node), beside peers
// that apply the same 200 objects to the same cluster in the same run:
// Flux's kustomize-controller and kubectl apply --server-side.
//
//	go test -run '^$' -bench Footprint -benchtime 1x -timeout 30m -v ./bench/agentbench/
//
// It takes about 5 minutes on 2 cores (the first run also builds
// kustomize-controller with peer-tools.sh, about 7 more: hence -timeout),
// and needs the cluster binaries of KUBE_TOOLS_CLUSTER=1
// hack/kube-tools.sh (KUBEBUILDER_ASSETS, default
// $HOME/.cache/misaki/k8s/v1.37.2), whose kubectl is the other peer. Each
// process is
// read from /proc/<pid>/status (VmRSS, VmHWM, RssAnon, RssFile) and
// /proc/<pid>/stat (utime+stime), the one-shot kubectl from its wait4
// rusage. For each it reports:
//   - idle: RSS after it has started (the agent: enrolled) and settled
//     for 20 s, and its CPU over the next 30 s;
//   - a 200-object apply (the gadget chart with bulk: 194): the time from
//     the deployment's creation (the Kustomization's; kubectl's start) to
//     the objects applied and to all of them ready (the twin's report
//     Healthy at the revision; the Kustomization Ready), the peak RSS
//     (VmHWM, reset before) and the CPU seconds in between;
//   - idle after: RSS and CPU over 30 s;
//   - the agent only: restarted with --drift-interval 10s, the CPU of
//     three drift passes over the 200 objects;
//   - for each row, when the Deployment's pod was created, scheduled and
//     ready: the cluster's part of "all ready".
//
// AGENT_ROWS adds agent rows, each its own vehicle: an item "NAME=value"
// sets an environment variable, "--flag=value" adds a flag, such as
// AGENT_ROWS="GOMEMLIMIT=32MiB --kube-qps=200".
//
// The markdown table goes to stdout and to RESULTS_DIR (default
// bench/results; "-" for none) as agent-<date>.md, or agent-rows-<date>.md
// with AGENT_ROWS.
package agentbench
