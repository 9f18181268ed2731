package catalog

import (
	"fmt"
	"github.com/misaki-io/misaki/internal/hub/render"
	"slices"
	"strings"

	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
)

// ValuesError is values that do not match a chart's values.schema.json.
type ValuesError struct {
	// Chart is "<name> <version>".
	Chart string
	// Problems are the validator's findings, one a line, each naming the
	// failing path ("- at '/replicas': minimum: got -1, want 0"); a
	// subchart's findings follow a "<subchart>:" line.
	Problems []string
}

func (e *ValuesError) Error() string {
	return fmt.Sprintf("values do not match the values.schema.json of chart %s:\n%s", e.Chart, strings.Join(e.Problems, "\n"))
}

// MergeValues merges value layers in order, each over the ones before it
// (maps merge key by key, anything else is replaced), as helm does with
// several -f files.
func MergeValues(layers ...map[string]any) map[string]any {
	out := map[string]any{}
	for _, l := range layers {
		out = loader.MergeMaps(out, l)
	}
	return out
}

// ValidateValues checks the layers, merged in order over the chart's
// defaults as helm install does, against the chart's values.schema.json
// (and its subcharts'), with the SDK's validator. A chart without a schema
// accepts any values. A mismatch is a *ValuesError.
func ValidateValues(ch *chart.Chart, layers ...map[string]any) error {
	if ch == nil || ch.Metadata == nil {
		return fmt.Errorf("validate values: no chart")
	}
	vals, err := chartutil.CoalesceValues(ch, MergeValues(layers...))
	if err != nil {
		return fmt.Errorf("chart %s %s: merge values: %w", ch.Name(), ch.Metadata.Version, err)
	}
	// render's validator, not the SDK's: it never follows a schema's
	// http(s) or file $ref (a chart must not make the hub fetch or read).
	err = render.ValidateSchema(ch, vals)
	if err == nil {
		return nil
	}
	ve := &ValuesError{Chart: ch.Name() + " " + ch.Metadata.Version}
	lines := strings.Split(strings.TrimSpace(err.Error()), "\n")
	if len(lines) > 0 && strings.HasPrefix(lines[0], "values don't meet the specifications") {
		lines = lines[1:] // the error already says what it is
	}
	// The SDK heads the top chart's findings with "<name>:"; the error
	// already names the chart.
	if len(lines) > 0 && lines[0] == ch.Name()+":" {
		lines = lines[1:]
	}
	ve.Problems = sortProblems(lines)
	return ve
}

// sortProblems orders the validator's findings, which come in map order,
// so one input always gives one message: each finding ("- at ...") keeps
// its indented sub-findings below it, siblings are sorted, and a subchart's
// "<name>:" heading keeps its findings.
func sortProblems(lines []string) []string {
	type node struct {
		line     string
		indent   int
		children []*node
	}
	var out []string
	var flatten func([]*node)
	flatten = func(ns []*node) {
		slices.SortStableFunc(ns, func(a, b *node) int { return strings.Compare(a.line, b.line) })
		for _, n := range ns {
			out = append(out, n.line)
			flatten(n.children)
		}
	}
	var section []*node // top-level findings under the current heading
	var stack []*node   // the open findings, outermost first
	for _, l := range lines {
		l = strings.TrimRight(l, " \t")
		trimmed := strings.TrimLeft(l, " \t")
		if trimmed == "" {
			continue
		}
		indent := len(l) - len(trimmed)
		if indent == 0 && !strings.HasPrefix(trimmed, "-") {
			// A subchart's heading: close the section before it.
			flatten(section)
			section, stack = nil, nil
			out = append(out, l)
			continue
		}
		n := &node{line: l, indent: indent}
		for len(stack) > 0 && stack[len(stack)-1].indent >= indent {
			stack = stack[:len(stack)-1]
		}
		if len(stack) == 0 {
			section = append(section, n)
		} else {
			p := stack[len(stack)-1]
			p.children = append(p.children, n)
		}
		stack = append(stack, n)
	}
	flatten(section)
	return out
}
