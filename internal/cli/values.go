package cli

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"helm.sh/helm/v4/pkg/strvals"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// valueFlags are Helm's value flags, with Helm's meaning: values files
// merged in order (a later file's keys win, maps merge deeply), then
// every --set-json, --set, --set-string, --set-file and --set-literal in
// that order, as helm install applies them (helm.sh/helm/v4/pkg/cli/values,
// whose strvals parser this uses; that package itself pulls in Helm's
// getters and plugins, which the CLI has no use for).
type valueFlags struct {
	files, set, setString, setJSON, setFile, setLiteral multiString
}

func (v *valueFlags) register(fs *flag.FlagSet) {
	fs.Var(&v.files, "values", "a values YAML `file` (\"-\": stdin); may be repeated, later files win")
	fs.Var(&v.files, "f", "")
	fs.Var(&v.set, "set", "set values, Helm style: `key=val`, such as a.b=c,list={x,y}; may be repeated")
	fs.Var(&v.setString, "set-string", "set values that stay strings: `key=val`; may be repeated")
	fs.Var(&v.setJSON, "set-json", "set JSON values: `key=json`; may be repeated")
	fs.Var(&v.setFile, "set-file", "set a value to a file's content: `key=path`; may be repeated")
	fs.Var(&v.setLiteral, "set-literal", "set a value to a literal string, no parsing: `key=val`; may be repeated")
}

// given reports whether any value flag was given.
func (v *valueFlags) given() bool {
	return len(v.files)+len(v.set)+len(v.setString)+len(v.setJSON)+len(v.setFile)+len(v.setLiteral) > 0
}

// merge builds the values the flags give, over base (nil: none).
func (v *valueFlags) merge(base map[string]any, stdin io.Reader) (map[string]any, error) {
	out := map[string]any{}
	if base != nil {
		out = mergeMaps(out, base)
	}
	for _, f := range v.files {
		m, err := readValuesFile(f, stdin)
		if err != nil {
			return nil, err
		}
		out = mergeMaps(out, m)
	}
	for _, s := range v.setJSON {
		t := strings.TrimSpace(s)
		if strings.HasPrefix(t, "{") {
			var m map[string]any
			if err := yaml.Unmarshal([]byte(t), &m); err != nil {
				return nil, usagef("--set-json %s: %v", s, err)
			}
			out = mergeMaps(out, m)
			continue
		}
		if err := strvals.ParseJSON(s, out); err != nil {
			return nil, usagef("--set-json %s: %v", s, err)
		}
	}
	for _, s := range v.set {
		if err := strvals.ParseInto(s, out); err != nil {
			return nil, usagef("--set %s: %v", s, err)
		}
	}
	for _, s := range v.setString {
		if err := strvals.ParseIntoString(s, out); err != nil {
			return nil, usagef("--set-string %s: %v", s, err)
		}
	}
	for _, s := range v.setFile {
		read := func(rs []rune) (any, error) {
			b, err := os.ReadFile(string(rs))
			return string(b), err
		}
		if err := strvals.ParseIntoFile(s, out, read); err != nil {
			return nil, fmt.Errorf("--set-file %s: %w", s, err)
		}
	}
	for _, s := range v.setLiteral {
		if err := strvals.ParseLiteralInto(s, out); err != nil {
			return nil, usagef("--set-literal %s: %v", s, err)
		}
	}
	return out, nil
}

// readValuesFile reads a values file ("-": stdin). Its YAML documents
// merge in order, as Helm's loader.LoadValues merges them.
func readValuesFile(path string, stdin io.Reader) (map[string]any, error) {
	var b []byte
	var err error
	if path == "-" {
		b, err = io.ReadAll(stdin)
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("values file: %w", err)
	}
	if len(b) > 0 && b[len(b)-1] != '\n' {
		b = append(b, '\n')
	}
	out := map[string]any{}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("values file %s: %w", path, err)
		}
		m := map[string]any{}
		if err := yaml.Unmarshal(doc, &m); err != nil {
			return nil, fmt.Errorf("values file %s: %w", path, err)
		}
		out = mergeMaps(out, m)
	}
}

// mergeMaps merges b over a: maps merge key by key, anything else in b
// replaces a's. Neither argument changes. (Helm's loader.MergeMaps.)
func mergeMaps(a, b map[string]any) map[string]any {
	out := make(map[string]any, len(a))
	for k, v := range a {
		if m, ok := v.(map[string]any); ok {
			v = mergeMaps(nil, m)
		}
		out[k] = v
	}
	for k, v := range b {
		if bm, ok := v.(map[string]any); ok {
			if am, ok := out[k].(map[string]any); ok {
				out[k] = mergeMaps(am, bm)
				continue
			}
			out[k] = mergeMaps(nil, bm)
			continue
		}
		out[k] = v
	}
	return out
}
