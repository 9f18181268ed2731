package cli

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func testEnv() (*env, *bytes.Buffer, *bytes.Buffer) {
	var out, errb bytes.Buffer
	e := &env{
		stdin:  strings.NewReader(""),
		stdout: &out,
		stderr: &errb,
		getenv: func(string) string { return "" },
		now:    func() time.Time { return time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC) },
		cmd:    &command{group: "repo", name: "add", args: "<name> <url>", summary: "Add"},
	}
	return e, &out, &errb
}

// errorWanted fails the test unless err is what want says: nil for "",
// else an error whose message contains want. It reports whether an error
// was wanted (the case ends there).
func errorWanted(t *testing.T, err error, want string) bool {
	t.Helper()
	if want != "" {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("err = %v, want it to contain %q", err, want)
		}
		return true
	}
	if err != nil {
		t.Fatal(err)
	}
	return false
}

func TestParse(t *testing.T) {
	type result struct {
		Pos          []string
		Type, Output string
		Charts       []string
		Plain        bool
		Hub          string
	}
	tests := []struct {
		name     string
		args     []string
		min, max int
		want     result
		wantErr  string
	}{
		{
			name: "flags after the arguments",
			args: []string{"charts", "oci://r/x", "--type", "oci", "--chart", "a", "--chart", "b", "--plain-http"},
			min:  2, max: 2,
			want: result{Pos: []string{"charts", "oci://r/x"}, Type: "oci", Charts: []string{"a", "b"}, Plain: true, Output: "table"},
		},
		{
			name: "flags between the arguments, one dash or two, name=value",
			args: []string{"-type=http", "charts", "--hub", "https://h:1", "http://x", "-o", "json"},
			min:  2, max: 2,
			want: result{Pos: []string{"charts", "http://x"}, Type: "http", Output: "json", Hub: "https://h:1"},
		},
		{
			name: "double dash ends the flags",
			args: []string{"--plain-http", "--", "-odd-name", "--type"},
			min:  2, max: 2,
			want: result{Pos: []string{"-odd-name", "--type"}, Plain: true, Output: "table"},
		},
		{
			name: "long output flag",
			args: []string{"a", "b", "--output=yaml"},
			min:  2, max: 2,
			want: result{Pos: []string{"a", "b"}, Output: "yaml"},
		},
		{name: "too few", args: []string{"charts"}, min: 2, max: 2, wantErr: "1 argument(s) given, 2 needed: want <name> <url>"},
		{name: "none", args: nil, min: 2, max: 2, wantErr: "missing arguments: want <name> <url>"},
		{name: "too many", args: []string{"a", "b", "c"}, min: 2, max: 2, wantErr: `unexpected argument "c"`},
		{name: "unknown flag", args: []string{"a", "b", "--bogus"}, min: 2, max: 2, wantErr: "unknown flag -bogus"},
		{name: "bad output", args: []string{"a", "b", "-o", "xml"}, min: 2, max: 2, wantErr: "-o xml: want table, json or yaml"},
		{name: "flag without value", args: []string{"a", "b", "--type"}, min: 2, max: 2, wantErr: "flag needs an argument: -type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, _, _ := testEnv()
			fs := e.flags()
			typ := fs.String("type", "", "")
			var charts multiString
			fs.Var(&charts, "chart", "")
			plain := fs.Bool("plain-http", false, "")
			pos, err := e.parse(fs, tt.args, tt.min, tt.max)
			if tt.wantErr != "" {
				var ue *usageError
				if !errors.As(err, &ue) || ue.msg != tt.wantErr {
					t.Fatalf("err = %v, want usage error %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := result{Pos: pos, Type: *typ, Charts: charts, Plain: *plain, Output: e.g.output, Hub: e.g.hub}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("parse (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseHelp(t *testing.T) {
	e, out, _ := testEnv()
	fs := e.flags()
	fs.String("type", "", "source `type`: http, oci or local")
	_, err := e.parse(fs, []string{"x", "-h"}, 2, 2)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v, want flag.ErrHelp", err)
	}
	for _, want := range []string{"Usage:\n  misaki repo add <name> <url> [flags]", "--type type", "source type: http, oci or local", "Global flags", "-o, --output format"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, out)
		}
	}
}

func TestKeyValues(t *testing.T) {
	tests := []struct {
		name    string
		items   []string
		want    map[string]string
		wantErr bool
	}{
		{name: "repeated", items: []string{"fleet=eu", "tier=a"}, want: map[string]string{"fleet": "eu", "tier": "a"}},
		{name: "comma list", items: []string{"cpu=2,memory=4Gi"}, want: map[string]string{"cpu": "2", "memory": "4Gi"}},
		{name: "empty value", items: []string{"k="}, want: map[string]string{"k": ""}},
		{name: "later wins", items: []string{"k=1", "k=2"}, want: map[string]string{"k": "2"}},
		{name: "no equals", items: []string{"fleet"}, wantErr: true},
		{name: "no key", items: []string{"=v"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := keyValues("label", tt.items)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}
