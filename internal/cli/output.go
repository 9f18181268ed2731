package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/yaml"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

// show prints v as -o asks: JSON or YAML of v itself, or what table
// writes.
func (e *env) show(v any, table func(w io.Writer) error) error {
	switch e.g.output {
	case "json":
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return fmt.Errorf("encode JSON: %w", err)
		}
		_, err = e.stdout.Write(append(b, '\n'))
		return err
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return fmt.Errorf("encode YAML: %w", err)
		}
		_, err = e.stdout.Write(b)
		return err
	default:
		return table(e.stdout)
	}
}

// showLine prints v as -o asks; in table output, the one line format and
// args make, such as "vehicle/car-1 created".
func (e *env) showLine(v any, format string, args ...any) error {
	return e.show(v, func(w io.Writer) error {
		_, err := fmt.Fprintf(w, "%s\n", fmt.Sprintf(format, args...))
		return err
	})
}

// showSecret prints v as -o asks; in table output, note on stderr and
// the secret alone on stdout, so that a script can capture it
// (TOKEN=$(misaki ...)).
func (e *env) showSecret(v any, note, secret string) error {
	return e.show(v, func(w io.Writer) error {
		fmt.Fprintln(e.stderr, note)
		_, err := fmt.Fprintln(w, secret)
		return err
	})
}

// showList prints l as -o asks; in table output, header over a row per
// item, or "No <what> found." (listOrNone).
func showList[T any](e *env, l hubv1.List[T], what string, header []string, row func(T) []string) error {
	return e.show(l, func(w io.Writer) error {
		t := newTable(header...)
		for _, item := range l.Items {
			t.add(row(item)...)
		}
		return e.listOrNone(w, t, what)
	})
}

// table is rows under a header, printed with aligned columns as kubectl
// get prints them.
type table struct {
	header []string
	rows   [][]string
}

func newTable(header ...string) *table { return &table{header: header} }

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, strings.Join(t.header, "\t"))
	for _, r := range t.rows {
		cells := make([]string, len(r))
		for i, c := range r {
			cells[i] = cell(c)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// cell keeps a value on one line and in its column.
func cell(s string) string {
	s = strings.NewReplacer("\t", " ", "\n", " ", "\r", " ").Replace(s)
	if s == "" {
		return "<none>"
	}
	return s
}

// listOrNone writes t, or "No <what> found." to stderr when it has no
// rows (kubectl's habit; stdout stays empty for scripts).
func (e *env) listOrNone(w io.Writer, t *table, what string) error {
	if len(t.rows) == 0 {
		_, err := fmt.Fprintf(e.stderr, "No %s found.\n", what)
		return err
	}
	return t.write(w)
}

// fields are "Key:  value" lines, as kubectl describe prints them.
type fields struct {
	rows [][2]string
}

func (f *fields) add(k, v string) { f.rows = append(f.rows, [2]string{k, v}) }

func (f *fields) write(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	for _, r := range f.rows {
		lines := strings.Split(r[1], "\n")
		if r[1] == "" {
			lines = []string{"<none>"}
		}
		fmt.Fprintf(tw, "%s:\t%s\n", r[0], lines[0])
		for _, l := range lines[1:] {
			fmt.Fprintf(tw, "\t%s\n", l)
		}
	}
	return tw.Flush()
}

// kv prints a map as sorted "k=v" items joined by sep.
func kv(m map[string]string, sep string) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, k+"="+m[k])
	}
	return strings.Join(out, sep)
}

// shortDuration is d as kubectl's AGE column prints it.
func shortDuration(d time.Duration) string {
	return duration.HumanDuration(d)
}

// ago is a time with how long ago it was: "2026-01-02T15:04:05Z (5m ago)".
func (e *env) ago(t *time.Time) string {
	if t == nil || t.IsZero() {
		return ""
	}
	d := e.now().Sub(*t)
	if d < 0 {
		return fmt.Sprintf("%s (in %s)", t.UTC().Format(time.RFC3339), shortDuration(-d))
	}
	return fmt.Sprintf("%s (%s ago)", t.UTC().Format(time.RFC3339), shortDuration(d))
}

// relative is "5m ago" or "in 13d"; "-" for nil.
func (e *env) relative(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	d := e.now().Sub(*t)
	if d < 0 {
		return "in " + shortDuration(-d)
	}
	return shortDuration(d) + " ago"
}

// shortDigest is "sha256:" and the first 12 hex digits.
func shortDigest(d string) string {
	algo, hex, ok := strings.Cut(d, ":")
	if !ok {
		return d
	}
	if len(hex) > 12 {
		hex = hex[:12]
	}
	return algo + ":" + hex
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// orDash is s, or "-" when empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// indentYAML is v as YAML indented by two spaces, for a describe block.
func indentYAML(v any) (string, error) {
	b, err := yaml.Marshal(v)
	if err != nil {
		return "", err
	}
	s := strings.TrimRight(string(b), "\n")
	if s == "{}" || s == "null" {
		return "", nil
	}
	return "  " + strings.ReplaceAll(s, "\n", "\n  "), nil
}
