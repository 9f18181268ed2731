package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeKubeconfig writes a kubeconfig whose contexts name servers
// (context name -> server URL), current the current one.
func writeKubeconfig(t *testing.T, current string, servers map[string]string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("apiVersion: v1\nkind: Config\ncurrent-context: " + current + "\nclusters:\n")
	for name, server := range servers {
		b.WriteString("- name: " + name + "\n  cluster: {server: '" + server + "'}\n")
	}
	b.WriteString("contexts:\n")
	for name := range servers {
		b.WriteString("- name: " + name + "\n  context: {cluster: " + name + ", user: u}\n")
	}
	b.WriteString("users:\n- name: u\n  user: {token: t}\n")
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestKubeConfig(t *testing.T) {
	flagFile := writeKubeconfig(t, "a", map[string]string{"a": "https://flag-a:6443", "b": "https://flag-b:6443"})
	envFile := writeKubeconfig(t, "e", map[string]string{"e": "https://env:6443"})
	t.Setenv("KUBERNETES_SERVICE_HOST", "") // never the in-cluster config here
	tests := []struct {
		name, env, path, context string
		want, wantErr            string
	}{
		{name: "flag over $KUBECONFIG", env: envFile, path: flagFile, want: "https://flag-a:6443"},
		{name: "flag and context", env: envFile, path: flagFile, context: "b", want: "https://flag-b:6443"},
		{name: "$KUBECONFIG", env: envFile, want: "https://env:6443"},
		{name: "unknown context", path: flagFile, context: "c", wantErr: `context "c" does not exist`},
		{name: "missing file", path: filepath.Join(t.TempDir(), "nope"), wantErr: "nope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("KUBECONFIG", tt.env)
			cfg, err := kubeConfig(tt.path, tt.context)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("kubeConfig(%q, %q) = %v, want an error with %q", tt.path, tt.context, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Host != tt.want {
				t.Errorf("kubeConfig(%q, %q) with KUBECONFIG=%q: host %s, want %s", tt.path, tt.context, tt.env, cfg.Host, tt.want)
			}
			if cfg.QPS != -1 {
				t.Errorf("QPS %v, want -1 (no client-side limit, as ctrl.GetConfig)", cfg.QPS)
			}
		})
	}
}

// The flag is the controller's own: run parses it and fails on the named
// file before it starts anything.
func TestRunKubeconfigFlag(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing-kubeconfig")
	err := run(t.Context(), []string{"--webhook-addr=0", "--kubeconfig", missing})
	if err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("run --kubeconfig %s = %v, want an error naming the file", missing, err)
	}
}
