package cli

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestValueFlags(t *testing.T) {
	dir := t.TempDir()
	base := writeFile(t, filepath.Join(dir, "base.yaml"), "replicas: 1\nimage:\n  repository: r\n  tag: \"1.0\"\nplanner:\n  replicas: 1\n  port: 9090\n")
	over := writeFile(t, filepath.Join(dir, "over.yaml"), "image:\n  tag: \"2.0\"\nplanner:\n  port: 9191\n")
	multi := writeFile(t, filepath.Join(dir, "multi.yaml"), "a: 1\nb: {x: 1}\n---\nb: {z: 2}\n")
	note := writeFile(t, filepath.Join(dir, "note.txt"), "hello\n")
	broken := writeFile(t, filepath.Join(dir, "broken.yaml"), "a: [\n")

	tests := []struct {
		name    string
		v       valueFlags
		base    map[string]any
		stdin   string
		want    map[string]any
		wantErr string
	}{
		{
			name: "files merge deeply, later wins",
			v:    valueFlags{files: multiString{base, over}},
			want: map[string]any{
				"replicas": float64(1),
				"image":    map[string]any{"repository": "r", "tag": "2.0"},
				"planner":  map[string]any{"replicas": float64(1), "port": float64(9191)},
			},
		},
		{
			name: "--set over files, typed as Helm types it",
			v:    valueFlags{files: multiString{base}, set: multiString{"replicas=3,planner.port=80", "image.tag=latest", "flag=true", "list={a,b}"}},
			want: map[string]any{
				"replicas": int64(3),
				"image":    map[string]any{"repository": "r", "tag": "latest"},
				"planner":  map[string]any{"replicas": float64(1), "port": int64(80)},
				"flag":     true,
				"list":     []any{"a", "b"},
			},
		},
		{
			name: "--set-string keeps strings; it applies after --set",
			v:    valueFlags{set: multiString{"tag=2"}, setString: multiString{"tag=3", "n=007"}},
			want: map[string]any{"tag": "3", "n": "007"},
		},
		{
			name: "--set-json, both forms, before --set",
			v:    valueFlags{setJSON: multiString{`a={"b":[1,2]}`, `{"c":{"d":true}}`}, set: multiString{"c.e=x"}},
			want: map[string]any{"a": map[string]any{"b": []any{float64(1), float64(2)}}, "c": map[string]any{"d": true, "e": "x"}},
		},
		{
			name: "--set-file and --set-literal",
			v:    valueFlags{setFile: multiString{"config.note=" + note}, setLiteral: multiString{"raw=a,b={c}"}},
			want: map[string]any{"config": map[string]any{"note": "hello\n"}, "raw": "a,b={c}"},
		},
		{
			name: "list index",
			v:    valueFlags{set: multiString{"ports[0]=80", "ports[1]=443"}},
			want: map[string]any{"ports": []any{int64(80), int64(443)}},
		},
		{
			name: "multi-document file merges its documents",
			v:    valueFlags{files: multiString{multi}},
			want: map[string]any{"a": float64(1), "b": map[string]any{"x": float64(1), "z": float64(2)}},
		},
		{
			name:  "stdin",
			v:     valueFlags{files: multiString{"-"}},
			stdin: "k: v\n",
			want:  map[string]any{"k": "v"},
		},
		{
			name: "over a base (update), base kept where not set",
			v:    valueFlags{set: multiString{"image.tag=3"}},
			base: map[string]any{"replicas": float64(2), "image": map[string]any{"repository": "r", "tag": "1"}},
			want: map[string]any{"replicas": float64(2), "image": map[string]any{"repository": "r", "tag": int64(3)}},
		},
		{
			name:    "bad --set",
			v:       valueFlags{set: multiString{"a[x]=1"}},
			wantErr: "--set a[x]=1",
		},
		{
			name:    "broken file",
			v:       valueFlags{files: multiString{broken}},
			wantErr: "values file " + broken,
		},
		{
			name:    "missing file",
			v:       valueFlags{files: multiString{filepath.Join(dir, "nope.yaml")}},
			wantErr: "values file: open",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := cmp.Diff(nil, tt.base)
			got, err := tt.v.merge(tt.base, strings.NewReader(tt.stdin))
			if errorWanted(t, err, tt.wantErr) {
				return
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("values (-want +got):\n%s", diff)
			}
			if after := cmp.Diff(nil, tt.base); after != before {
				t.Errorf("merge changed its base:\n%s", after)
			}
		})
	}
}

func TestMergeMapsCopies(t *testing.T) {
	a := map[string]any{"m": map[string]any{"x": 1}}
	out := mergeMaps(a, map[string]any{"m": map[string]any{"y": 2}})
	out["m"].(map[string]any)["z"] = 3
	if diff := cmp.Diff(map[string]any{"m": map[string]any{"x": 1}}, a); diff != "" {
		t.Errorf("a changed (-want +got):\n%s", diff)
	}
}
