package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

var chartCommands = []*command{
	{
		group: "chart", name: "list", aliases: []string{"ls"},
		summary: "List charts and their versions (pinned versions marked)",
		help: `One row per chart version, newest first within a chart. PINNED versions
are used by a deployment: the source must keep serving exactly DIGEST's
bytes for them.`,
		run: chartList,
	},
	{
		group: "chart", name: "show", args: "<source>/<chart> [version]",
		summary: "Show one chart version: digest, pinning and values schema",
		help: `Without a version, the newest. -o json or -o yaml include the chart's
values schema (values.schema.json).

Example:
  misaki chart show charts/shuttle 1.0.0 -o yaml`,
		run: chartShow,
	},
}

func chartList(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	source := fs.String("source", "", "only this chart source's charts")
	if _, err := e.parse(fs, args, 0, 0); err != nil {
		return err
	}
	c, err := e.hub()
	if err != nil {
		return err
	}
	q := url.Values{}
	if *source != "" {
		q.Set("source", *source)
	}
	var l hubv1.List[hubv1.Chart]
	if err := c.get(ctx, "/v1/charts", q, &l); err != nil {
		return err
	}
	return e.show(l, func(w io.Writer) error {
		t := newTable("SOURCE", "NAME", "VERSION", "APP-VERSION", "PINNED", "DIGEST")
		for _, ch := range l.Items {
			for _, v := range ch.Versions {
				t.add(ch.Source, ch.Name, v.Version, orDash(v.AppVersion), yesNo(v.Pinned), orDash(shortDigest(v.Digest)))
			}
		}
		return e.listOrNone(w, t, "charts")
	})
}

// splitChart parses "<source>/<chart>".
func splitChart(ref string) (source, chart string, err error) {
	source, chart, ok := strings.Cut(ref, "/")
	if !ok || source == "" || chart == "" || strings.Contains(chart, "/") {
		return "", "", usagef("chart %q: want <source>/<chart>, such as charts/shuttle (misaki chart list shows them)", ref)
	}
	return source, chart, nil
}

func chartShow(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	pos, err := e.parse(fs, args, 1, 2)
	if err != nil {
		return err
	}
	source, name, err := splitChart(pos[0])
	if err != nil {
		return err
	}
	c, err := e.hub()
	if err != nil {
		return err
	}
	var ver string
	if len(pos) == 2 {
		ver = pos[1]
	} else {
		var l hubv1.List[hubv1.Chart]
		if err := c.get(ctx, "/v1/charts", url.Values{"source": {source}}, &l); err != nil {
			return err
		}
		i := slices.IndexFunc(l.Items, func(ch hubv1.Chart) bool { return ch.Name == name })
		if i < 0 || len(l.Items[i].Versions) == 0 {
			return fmt.Errorf("no chart %s in source %s (misaki chart list --source %s shows its charts)", name, source, source)
		}
		ver = l.Items[i].Versions[0].Version
	}
	var cv hubv1.ChartVersion
	path := "/v1/sources/" + pathEscape(source) + "/charts/" + pathEscape(name) + "/versions/" + pathEscape(ver)
	if err := c.get(ctx, path, nil, &cv); err != nil {
		return err
	}
	return e.show(cv, func(w io.Writer) error {
		f := &fields{}
		f.add("Source", cv.Source)
		f.add("Name", cv.Name)
		f.add("Version", cv.Version)
		f.add("App version", cv.AppVersion)
		f.add("Description", cv.Description)
		f.add("Digest", cv.Digest)
		f.add("Pinned", yesNo(cv.Pinned))
		f.add("Values schema", schemaSummary(cv.ValuesSchema))
		return f.write(w)
	})
}

// schemaSummary names a values schema's top-level properties.
func schemaSummary(raw json.RawMessage) string {
	if len(raw) == 0 {
		return "none"
	}
	var s struct {
		Properties map[string]json.RawMessage `json:"properties"`
		Required   []string                   `json:"required"`
	}
	if json.Unmarshal(raw, &s) != nil || len(s.Properties) == 0 {
		return "yes (-o yaml shows it)"
	}
	var props []string
	for k := range s.Properties {
		if slices.Contains(s.Required, k) {
			k += "*"
		}
		props = append(props, k)
	}
	slices.Sort(props)
	return fmt.Sprintf("%s (* required; -o yaml shows the schema)", strings.Join(props, ", "))
}
