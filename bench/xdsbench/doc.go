// Package xdsbench measures the control plane: a real kube-apiserver and
// etcd, the misaki-controller binary, and a fleet of proxies' ADS clients
// (the proxy's own xDS client, one connection each) in this process.
//
//	go test -run '^$' -bench ControlPlane -benchtime 1x -v ./bench/xdsbench/
//
// It needs hack/kube-tools.sh's kube-apiserver (KUBEBUILDER_ASSETS) and
// reports, for PROXIES proxies (default 1,000) over NAMESPACES namespaces
// (10) of ROUTES routes each (100):
//   - full push: the fleet connects at once to a controller that holds
//     every Route; the time until the last proxy has applied all of its
//     namespace's routes;
//   - route change: CHANGES rounds (20) of one Route updated in every
//     namespace; each proxy's time from the update call to its apply,
//     as p50, p99 and max over every proxy and round;
//   - the controller's CPU time and its peak and final RSS.
package xdsbench
