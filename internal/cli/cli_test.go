package cli

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// run runs the CLI as a user would, with no config file unless args name
// one.
func runCLI(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	e, out, errb := testEnv()
	e.stdin = strings.NewReader(stdin)
	e.cmd = nil
	e.getenv = func(k string) string {
		if k == "HOME" {
			return t.TempDir()
		}
		return ""
	}
	code = e.run(context.Background(), args)
	return code, out.String(), errb.String()
}

func TestHelpForEveryCommand(t *testing.T) {
	for _, c := range commands {
		t.Run(c.path(), func(t *testing.T) {
			args := append(strings.Fields(c.path()), "-h")
			code, out, errOut := runCLI(t, "", args...)
			if code != 0 || errOut != "" {
				t.Fatalf("%v: exit %d, stderr %q", args, code, errOut)
			}
			if !strings.Contains(out, "Usage:\n  "+c.usageLine()) || !strings.Contains(out, "Global flags") {
				t.Errorf("%v: usage lacks its usage line:\n%s", args, out)
			}
			code, out2, _ := runCLI(t, "", append([]string{"help"}, strings.Fields(c.path())...)...)
			if code != 0 || out2 != out {
				t.Errorf("misaki help %s: exit %d, and not the -h text:\n%s", c.path(), code, out2)
			}
		})
	}
}

func TestDispatch(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{name: "no arguments", args: nil, wantCode: 2, wantStderr: "Usage:\n  misaki <command>"},
		{name: "help", args: []string{"help"}, wantCode: 0, wantStdout: "vehicle token <id>"},
		{name: "-h", args: []string{"-h"}, wantCode: 0, wantStdout: "deploy preview <name>"},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: 2, wantStderr: `error: unknown command "frobnicate" (misaki help lists the commands)`},
		{name: "unknown subcommand", args: []string{"vehicle", "fly"}, wantCode: 2, wantStderr: `error: unknown command "vehicle" "fly"`},
		{name: "group alone", args: []string{"deploy"}, wantCode: 2, wantStderr: "deploy update <name>"},
		{name: "group -h", args: []string{"repo", "-h"}, wantCode: 0, wantStdout: "repo remove <name>"},
		{name: "alias", args: []string{"vehicles", "ls", "-h"}, wantCode: 0, wantStdout: "misaki vehicle list [flags]"},
		{name: "global flag before the command", args: []string{"--hub", "https://x", "-o", "json", "version"}, wantCode: 0, wantStdout: `"version":`},
		{name: "bad flag value", args: []string{"vehicle", "token", "car-1", "--ttl", "soon"}, wantCode: 2, wantStderr: "invalid value \"soon\" for flag -ttl"},
		{name: "missing argument", args: []string{"repo", "add", "charts"}, wantCode: 2, wantStderr: "error: 1 argument(s) given, 2 needed: want <name> <url>\nUsage: misaki repo add <name> <url> [flags]\nRun 'misaki repo add -h' for help.\n"},
		{name: "bad type", args: []string{"repo", "add", "a", "b", "--type", "ftp"}, wantCode: 2, wantStderr: "--type ftp: want http, oci or local"},
		{name: "deploy create without chart", args: []string{"deploy", "create", "x"}, wantCode: 2, wantStderr: "--chart and --version are required"},
		{name: "deploy update without changes", args: []string{"deploy", "update", "x"}, wantCode: 2, wantStderr: "nothing to change"},
		{name: "preview without vehicle", args: []string{"deploy", "preview", "x"}, wantCode: 2, wantStderr: "--vehicle is required"},
		{name: "rollout group alone", args: []string{"rollout"}, wantCode: 2, wantStderr: "rollout watch <deployment> [generation]"},
		{name: "rollout alias", args: []string{"rollouts", "ls", "-h"}, wantCode: 0, wantStdout: "misaki rollout list [flags]"},
		{name: "rollout show without deployment", args: []string{"rollout", "show"}, wantCode: 2, wantStderr: "missing arguments: want <deployment> [generation]"},
		{name: "rollout pause bad generation", args: []string{"rollout", "pause", "shuttle", "0"}, wantCode: 2, wantStderr: `generation "0": want a number from 1`},
		{name: "rollout watch bad interval", args: []string{"rollout", "watch", "shuttle", "--interval", "0s"}, wantCode: 2, wantStderr: "--interval 0s: want a positive duration"},
		{name: "rollout list bad limit", args: []string{"rollout", "list", "--limit", "0"}, wantCode: 2, wantStderr: "--limit 0: want 1 or more"},
		{name: "deploy create bad wave", args: []string{"deploy", "create", "x", "--chart", "c/x", "--version", "1", "--wave", "half"}, wantCode: 2, wantStderr: `--wave "half": want a size`},
		{name: "deploy rollback negative", args: []string{"deploy", "rollback", "x", "--to", "-1"}, wantCode: 2, wantStderr: "--to -1: want a generation from 1"},
		{name: "token without scope", args: []string{"token", "create", "ci"}, wantCode: 2, wantStderr: "--scope: want read, admin or cloud-agent"},
		{
			name: "no hub configured", args: []string{"vehicle", "list"}, wantCode: 1,
			wantStderr: "error: no hub configured: pass --hub https://<host>:8443 and --token, or write ",
		},
		{name: "version", args: []string{"version"}, wantCode: 0, wantStdout: "misaki "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, "", tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d (stdout %q, stderr %q)", code, tt.wantCode, out, errOut)
			}
			if !strings.Contains(out, tt.wantStdout) {
				t.Errorf("stdout %q lacks %q", out, tt.wantStdout)
			}
			if !strings.Contains(errOut, tt.wantStderr) {
				t.Errorf("stderr %q lacks %q", errOut, tt.wantStderr)
			}
		})
	}
}

// TestErrorAnswers covers answers that are not the hub's JSON errors (a
// proxy in front of it, say): the status and the body's first line are
// shown.
func TestErrorAnswers(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/sources":
			http.Error(w, "<html>bad gateway</html>\nmore", http.StatusBadGateway)
		case "/v1/deployments":
			if r.Header.Get("Authorization") != "Bearer wrong" {
				t.Errorf("Authorization = %q", r.Header.Get("Authorization"))
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			json.NewEncoder(w).Encode(map[string]any{"code": 401, "message": "unknown operator token"})
		case "/v1/vehicles":
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]any{"code": 400, "message": "selector: unable to parse requirement", "field": "selector"})
		}
	}))
	defer srv.Close()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "not JSON", args: []string{"repo", "list"}, want: "error: GET /v1/sources: the hub answered 502 Bad Gateway: <html>bad gateway</html>\n"},
		{name: "unauthorized", args: []string{"deploy", "list"}, want: "error: unknown operator token (check --token, or the token in the config file)\n"},
		{name: "field", args: []string{"vehicle", "list", "-l", "a=(b"}, want: "error: selector: unable to parse requirement (field: selector)\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, "", append(tt.args, "--hub", srv.URL, "--token", "wrong")...)
			if code != 1 || out != "" || errOut != tt.want {
				t.Errorf("exit %d, stdout %q, stderr %q; want 1, \"\", %q", code, out, errOut, tt.want)
			}
		})
	}
}
