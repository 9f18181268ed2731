package cli

import (
	"errors"
	"fmt"
	"path/filepath"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// kubeConfig loads a cluster's address and credentials as kubectl does:
// the file --kubeconfig names, else the files $KUBECONFIG lists (merged),
// else ~/.kube/config, else the pod's service account when run in a pod.
// context, when not empty, picks one of the file's contexts instead of
// its current one.
func (e *env) kubeConfig(path, context string) (*rest.Config, error) {
	rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: path}
	if v := e.getenv(clientcmd.RecommendedConfigPathEnvVar); v != "" {
		rules.Precedence = filepath.SplitList(v)
	} else if home := e.getenv("HOME"); home != "" {
		rules.Precedence = []string{filepath.Join(home, clientcmd.RecommendedHomeDir, clientcmd.RecommendedFileName)}
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules,
		&clientcmd.ConfigOverrides{CurrentContext: context}).ClientConfig()
	if clientcmd.IsEmptyConfig(err) {
		return nil, errors.New("no kubeconfig: pass --kubeconfig, set $KUBECONFIG or write ~/.kube/config")
	}
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.Timeout = e.g.timeout
	cfg.UserAgent = "misaki/" + version()
	cfg.QPS, cfg.Burst = 50, 100 // a check is a few dozen requests
	return cfg, nil
}
