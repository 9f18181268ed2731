package cli

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	xdg := filepath.Join(dir, "xdg")
	writeFile(t, filepath.Join(home, ".config", "misaki", "config.yaml"), "hub: https://home:8443\ntoken: home-token\ncaFile: ca.crt\n")
	writeFile(t, filepath.Join(xdg, "misaki", "config.yaml"), "hub: https://xdg:8443\ntoken: xdg-token\n")
	envFile := writeFile(t, filepath.Join(dir, "env.yaml"), "hub: https://env:8443\ntoken: env-token\ncaFile: /abs/ca.pem\n")
	flagFile := writeFile(t, filepath.Join(dir, "flag.yaml"), "hub: flaghub:8443/\ntoken: flag-token\n")
	bad := writeFile(t, filepath.Join(dir, "bad.yaml"), "hub: https://x\ntokne: typo\n")
	noHub := writeFile(t, filepath.Join(dir, "nohub.yaml"), "token: t\n")

	tests := []struct {
		name    string
		env     map[string]string
		g       globals
		want    Config
		wantErr string
	}{
		{
			name: "home config, caFile relative to it",
			env:  map[string]string{"HOME": home},
			want: Config{Hub: "https://home:8443", Token: "home-token", CAFile: filepath.Join(home, ".config", "misaki", "ca.crt")},
		},
		{
			name: "XDG_CONFIG_HOME before home",
			env:  map[string]string{"HOME": home, "XDG_CONFIG_HOME": xdg},
			want: Config{Hub: "https://xdg:8443", Token: "xdg-token"},
		},
		{
			name: "MISAKI_CONFIG before the default path",
			env:  map[string]string{"HOME": home, "MISAKI_CONFIG": envFile},
			want: Config{Hub: "https://env:8443", Token: "env-token", CAFile: "/abs/ca.pem"},
		},
		{
			name: "--config before MISAKI_CONFIG; https:// added, trailing slash dropped",
			env:  map[string]string{"HOME": home, "MISAKI_CONFIG": envFile},
			g:    globals{config: flagFile},
			want: Config{Hub: "https://flaghub:8443", Token: "flag-token"},
		},
		{
			name: "flags override each field of the file",
			env:  map[string]string{"MISAKI_CONFIG": envFile},
			g:    globals{hub: "http://127.0.0.1:1", token: "t2"},
			want: Config{Hub: "http://127.0.0.1:1", Token: "t2", CAFile: "/abs/ca.pem"},
		},
		{
			name: "flags alone, no file anywhere",
			env:  map[string]string{"HOME": filepath.Join(dir, "nowhere")},
			g:    globals{hub: "https://h", token: "t", caFile: "ca.pem"},
			want: Config{Hub: "https://h", Token: "t", CAFile: "ca.pem"},
		},
		{
			name:    "no hub anywhere",
			env:     map[string]string{"HOME": filepath.Join(dir, "nowhere")},
			wantErr: "no hub configured: pass --hub https://<host>:8443 and --token, or write " + filepath.Join(dir, "nowhere", ".config", "misaki", "config.yaml"),
		},
		{
			name:    "file without hub",
			g:       globals{config: noHub},
			wantErr: "no hub configured",
		},
		{
			name:    "named file missing",
			env:     map[string]string{"MISAKI_CONFIG": filepath.Join(dir, "missing.yaml")},
			wantErr: "config file: open " + filepath.Join(dir, "missing.yaml"),
		},
		{
			name:    "unknown field",
			g:       globals{config: bad},
			wantErr: `unknown field "tokne"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, _, _ := testEnv()
			e.getenv = func(k string) string { return tt.env[k] }
			e.g = tt.g
			got, err := e.resolve()
			if errorWanted(t, err, tt.wantErr) {
				return
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}
