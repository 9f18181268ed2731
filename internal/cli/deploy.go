package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

const deployFlagsHelp = `Values follow Helm: -f files in order, then --set-json, --set, --set-string,
--set-file and --set-literal. A customization (--customization
name:selector:values.yaml) overrides values for the targeted vehicles its
selector matches, merged in order over the deployment's values.
--placement component=vehicle|cloud|auto places one component; the others
take the chart's misaki.io/placement annotation, else --default-placement,
else auto. --health-deadline (such as 10m, at most 24h) is how long the
deployment's objects have to become ready after the agent applies a
revision (default: the agent's); with --rollback, a deployment not ready by
then goes back to its last healthy revision.

` + rolloutFlagsHelp

var deployCommands = []*command{
	{
		group: "deploy", name: "create", args: "<name>",
		summary: "Create a deployment: a chart version for the vehicles a selector matches",
		help: deployFlagsHelp + `

The hub pins the chart version by digest and checks the values against the
chart's values schema before it stores anything.

Examples:
  misaki deploy create shuttle --chart charts/shuttle --version 1.0.0 \
      --selector 'fleet=eu' --set replicas=2 --placement planner=cloud \
      --health-deadline 10m --rollback
  misaki deploy create shuttle --chart charts/shuttle --version 1.0.0 \
      --selector 'fleet=eu' --canary 1 --wave 10% --wave 50% \
      --bake-time 30m --failure-threshold 2 --gate parked --gate 'battery>=30'`,
		run: deployCreate,
	},
	{
		group: "deploy", name: "list", aliases: []string{"ls"},
		summary: "List deployments",
		run:     deployList,
	},
	{
		group: "deploy", name: "show", aliases: []string{"get", "describe"}, args: "<name>",
		summary: "Show a deployment: chart, values, selector, customizations, placement",
		run:     deployShow,
	},
	{
		group: "deploy", name: "update", args: "<name>",
		summary: "Change a deployment (read, change what the flags say, write back)",
		help: deployFlagsHelp + `

Only what the flags name changes. Value flags merge over the stored values
(as helm upgrade --reuse-values); --reset-values starts from none.
--placement component- drops a component's placement; a --customization
replaces the one of the same name; --health-deadline "" --rollback=false
drops the health policy. Rollout flags change only what they name:
--wave and --gate replace all the waves or gates (--wave '' alone drops
the waves, --gate '' the gates), --canary '' drops the canary, an empty
--bake-time (and the like) goes back to the default, and --clear-rollout
drops the policy (with other rollout flags: a new one of those alone).
The write names the generation read, so a concurrent change is not lost
(the command reads again and retries). Each change is a new generation,
rolled out by the policy it has (misaki rollout watch <name> follows it).

Examples:
  misaki deploy update shuttle --version 1.1.0 --set planner.replicas=2
  misaki deploy update shuttle --wave 25% --wave eu=selector:fleet=eu --gate parked
  misaki deploy update shuttle --clear-rollout`,
		run: deployUpdate,
	},
	{
		group: "deploy", name: "versions", aliases: []string{"history"}, args: "<name>",
		summary: "List a deployment's generations, newest first, with their rollouts",
		help: `Every change to a deployment is a new generation; the hub keeps each one.
ROLLOUT is the phase of the generation's rollout (misaki rollout show
<name> <generation>). -o json or -o yaml print every generation's spec.

Example:
  misaki deploy versions shuttle`,
		run: deployVersions,
	},
	{
		group: "deploy", name: "rollback", args: "<name>",
		summary: "Roll back: a new generation with the spec of an earlier one",
		help: `Writes a new generation with the spec (chart version, values, selector,
policies) of generation --to, by default the one before the current, and
rolls it out by that spec's rollout policy. The chart's bytes are pinned
in the hub, so a rollback needs no chart source. To stop a rollout that is
still going, misaki rollout abort <name> sends the vehicles it reached
back instead.

Examples:
  misaki deploy rollback shuttle
  misaki deploy rollback shuttle --to 3`,
		run: deployRollback,
	},
	{
		group: "deploy", name: "delete", aliases: []string{"rm"}, args: "<name>",
		summary: "Delete a deployment (its vehicles get revisions without it)",
		run:     deleteNamed("/v1/deployments/", "deployment", "deleted"),
	},
	{
		group: "deploy", name: "preview", args: "<name>",
		summary: "Render and place a deployment for one vehicle, storing nothing",
		help: `Previews the stored deployment <name> with the changes the flags name, or,
when there is no deployment <name>, a new one the flags describe (--chart
and --version needed). Prints the placement table (as YAML comments) and
the manifests of both halves as YAML documents.

` + deployFlagsHelp + `

Examples:
  misaki deploy preview shuttle --vehicle car-1 --set planner.replicas=3
  misaki deploy preview trial --chart charts/shuttle --version 1.0.0 --vehicle car-1`,
		run: deployPreview,
	},
}

// deployFlags are the spec flags create, update and preview share.
type deployFlags struct {
	chart, version, selector, namespace, defaultPlacement string
	vals                                                  valueFlags
	placement, customizations                             multiString
	healthDeadline                                        string
	rollback                                              bool
	rollout                                               rolloutFlags
	// update and preview only
	resetValues          bool
	removeCustomizations multiString
}

func (d *deployFlags) register(fs *flag.FlagSet, change bool) {
	fs.StringVar(&d.chart, "chart", "", "the `chart`: source/chart, such as charts/shuttle")
	fs.StringVar(&d.version, "version", "", "the chart `version`")
	fs.StringVar(&d.selector, "selector", "", "label `selector` of the vehicles to run on, such as 'fleet=eu'")
	fs.StringVar(&d.selector, "l", "", "")
	fs.StringVar(&d.namespace, "namespace", "", "the vehicle `namespace` for the chart's objects (default \"default\")")
	fs.StringVar(&d.defaultPlacement, "default-placement", "", "placement of components nothing else places: vehicle, cloud or auto")
	fs.Var(&d.placement, "placement", "place a component: `comp=place` (vehicle, cloud or auto); may be repeated")
	fs.Var(&d.customizations, "customization", "values for the vehicles a selector matches: `name:selector:file` (a values YAML file); may be repeated")
	fs.StringVar(&d.healthDeadline, "health-deadline", "", "how long the objects have to become ready after the agent applies a revision: a `duration` such as 10m, at most 24h (\"\": the agent's default)")
	fs.BoolVar(&d.rollback, "rollback", false, "a deployment not ready by its deadline goes back to its last healthy revision (--rollback=false: it stays as applied)")
	d.rollout.register(fs, change)
	d.vals.register(fs)
	if change {
		fs.BoolVar(&d.resetValues, "reset-values", false, "start from no values instead of the stored ones")
		fs.Var(&d.removeCustomizations, "remove-customization", "drop the customization `name`; may be repeated")
	}
}

// apply changes dep as the flags given on fs say.
func (d *deployFlags) apply(fs *flag.FlagSet, dep *hubv1.Deployment, stdin io.Reader) error {
	if given(fs, "chart") {
		src, name, err := splitChart(d.chart)
		if err != nil {
			return err
		}
		dep.Chart.Source, dep.Chart.Name = src, name
	}
	if given(fs, "version") {
		dep.Chart.Version = d.version
	}
	if given(fs, "selector") {
		dep.Selector = d.selector
	}
	if given(fs, "namespace") {
		dep.Namespace = d.namespace
	}
	if given(fs, "default-placement") {
		if err := checkPlace("--default-placement", d.defaultPlacement); err != nil {
			return err
		}
		dep.DefaultPlacement = d.defaultPlacement
	}
	for _, p := range d.placement {
		if comp, ok := strings.CutSuffix(p, "-"); ok && !strings.Contains(p, "=") {
			delete(dep.Placement, comp)
			continue
		}
		comp, place, ok := strings.Cut(p, "=")
		if !ok || comp == "" {
			return usagef("--placement %q: want component=vehicle|cloud|auto", p)
		}
		if err := checkPlace("--placement "+comp, place); err != nil {
			return err
		}
		if dep.Placement == nil {
			dep.Placement = map[string]string{}
		}
		dep.Placement[comp] = place
	}
	if len(dep.Placement) == 0 {
		dep.Placement = nil
	}
	if given(fs, "health-deadline") || given(fs, "rollback") {
		var h hubv1.HealthPolicy
		if dep.Health != nil {
			h = *dep.Health
		}
		if given(fs, "health-deadline") {
			h.Deadline = d.healthDeadline // the hub checks it (field health.deadline)
		}
		if given(fs, "rollback") {
			h.Rollback = d.rollback
		}
		dep.Health = &h
		if h == (hubv1.HealthPolicy{}) {
			dep.Health = nil // no deadline and no rollback: no policy
		}
	}
	if err := d.rollout.apply(fs, dep); err != nil {
		return err
	}
	if d.resetValues || d.vals.given() {
		base := dep.Values
		if d.resetValues {
			base = nil
		}
		vals, err := d.vals.merge(base, stdin)
		if err != nil {
			return err
		}
		dep.Values = vals
		if len(vals) == 0 {
			dep.Values = nil
		}
	}
	for _, name := range d.removeCustomizations {
		i := slices.IndexFunc(dep.Customizations, func(c hubv1.Customization) bool { return c.Name == name })
		if i < 0 {
			return fmt.Errorf("--remove-customization %s: the deployment has no customization %s", name, name)
		}
		dep.Customizations = slices.Delete(dep.Customizations, i, i+1)
	}
	for _, s := range d.customizations {
		c, err := parseCustomization(s, stdin)
		if err != nil {
			return err
		}
		if i := slices.IndexFunc(dep.Customizations, func(o hubv1.Customization) bool { return o.Name == c.Name }); i >= 0 {
			dep.Customizations[i] = c
		} else {
			dep.Customizations = append(dep.Customizations, c)
		}
	}
	return nil
}

func checkPlace(flagName, p string) error {
	switch p {
	case hubv1.PlaceVehicle, hubv1.PlaceCloud, hubv1.PlaceAuto:
		return nil
	}
	return usagef("%s=%s: want vehicle, cloud or auto", flagName, p)
}

// parseCustomization parses "name:selector:values.yaml". A label selector
// has no ':', so the name ends at the first and the file starts after
// the last.
func parseCustomization(s string, stdin io.Reader) (hubv1.Customization, error) {
	i, j := strings.Index(s, ":"), strings.LastIndex(s, ":")
	if i <= 0 || i == j {
		return hubv1.Customization{}, usagef("--customization %q: want name:selector:values.yaml", s)
	}
	c := hubv1.Customization{Name: s[:i], Selector: s[i+1 : j]}
	if file := s[j+1:]; file != "" {
		vals, err := readValuesFile(file, stdin)
		if err != nil {
			return c, fmt.Errorf("--customization %s: %w", c.Name, err)
		}
		if len(vals) > 0 {
			c.Values = vals
		}
	}
	return c, nil
}

func deployCreate(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	var d deployFlags
	d.register(fs, false)
	pos, err := e.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if d.chart == "" || d.version == "" {
		return usagef("--chart and --version are required")
	}
	dep := hubv1.Deployment{Name: pos[0]}
	if err := d.apply(fs, &dep, e.stdin); err != nil {
		return err
	}
	if dep.Selector == "" {
		fmt.Fprintf(e.stderr, "warning: no --selector: deployment %s targets no vehicle yet\n", dep.Name)
	}
	c, err := e.hub()
	if err != nil {
		return err
	}
	var got hubv1.Deployment
	if err := c.do(ctx, http.MethodPost, "/v1/deployments", nil, dep, &got); err != nil {
		return err
	}
	return e.showLine(got, "deployment/%s created (chart %s/%s %s, %s)",
		got.Name, got.Chart.Source, got.Chart.Name, got.Chart.Version, shortDigest(got.Chart.Digest))
}

func deployList(ctx context.Context, e *env, args []string) error {
	_, c, err := e.connect(e.flags(), args, 0, 0)
	if err != nil {
		return err
	}
	l, err := listAll[hubv1.Deployment](ctx, c, "/v1/deployments", nil, 1000, 0)
	if err != nil {
		return err
	}
	return showList(e, l, "deployments",
		[]string{"NAME", "CHART", "VERSION", "SELECTOR", "GENERATION", "UPDATED", "AGE"},
		func(d hubv1.Deployment) []string {
			return []string{d.Name, d.Chart.Source + "/" + d.Chart.Name, d.Chart.Version, d.Selector,
				fmt.Sprint(d.Generation), e.since(d.Updated), e.since(d.Created)}
		})
}

func deployShow(ctx context.Context, e *env, args []string) error {
	pos, c, err := e.connect(e.flags(), args, 1, 1)
	if err != nil {
		return err
	}
	d, err := c.deployment(ctx, pos[0])
	if err != nil {
		return err
	}
	return e.show(d, func(w io.Writer) error { return e.describeDeployment(w, d) })
}

func (e *env) describeDeployment(w io.Writer, d hubv1.Deployment) error {
	f := &fields{}
	f.add("Name", d.Name)
	f.add("Namespace", d.Namespace)
	f.add("Chart", fmt.Sprintf("%s/%s %s", d.Chart.Source, d.Chart.Name, d.Chart.Version))
	f.add("Digest", d.Chart.Digest)
	f.add("Selector", d.Selector)
	f.add("Placement", kv(d.Placement, "\n"))
	f.add("Default placement", d.DefaultPlacement)
	f.add("Health", healthPolicy(d.Health))
	f.add("Rollout", describePolicy(d.Rollout))
	f.add("Generation", fmt.Sprint(d.Generation))
	created := e.ago(&d.Created)
	if d.CreatedBy != "" {
		created += " by " + d.CreatedBy
	}
	f.add("Created", created)
	f.add("Updated", e.ago(&d.Updated))
	if err := f.write(w); err != nil {
		return err
	}
	vals, err := indentYAML(d.Values)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "Values:\n%s\n", orNoneBlock(vals))
	if len(d.Customizations) == 0 {
		_, err := fmt.Fprint(w, "Customizations:  <none>\n")
		return err
	}
	fmt.Fprint(w, "Customizations:\n")
	for _, c := range d.Customizations {
		vals, err := indentYAML(c.Values)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "- %s (selector %q):\n%s\n", c.Name, c.Selector, orNoneBlock(vals))
	}
	return nil
}

// healthPolicy describes a deployment's health policy ("" for none).
func healthPolicy(h *hubv1.HealthPolicy) string {
	if h == nil {
		return ""
	}
	deadline := "the agent's default deadline"
	if h.Deadline != "" {
		deadline = "deadline " + h.Deadline
	}
	if h.Rollback {
		return deadline + ", then rollback"
	}
	return deadline + ", no rollback"
}

func orNoneBlock(s string) string {
	if s == "" {
		return "  <none>"
	}
	return s
}

func deployUpdate(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	var d deployFlags
	d.register(fs, true)
	pos, err := e.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	changes := 0
	fs.Visit(func(f *flag.Flag) {
		if !isGlobal(f.Name) {
			changes++
		}
	})
	if changes == 0 {
		return usagef("nothing to change: name what to change with flags (misaki deploy update -h)")
	}
	c, err := e.hub()
	if err != nil {
		return err
	}
	return retryOnConflict(3, func() error {
		dep, err := c.deployment(ctx, pos[0])
		if err != nil {
			return err
		}
		before := dep.Generation
		if err := d.apply(fs, &dep, e.stdin); err != nil {
			return err
		}
		var got hubv1.Deployment
		if err := c.do(ctx, http.MethodPut, "/v1/deployments/"+pathEscape(pos[0]), nil, dep, &got); err != nil {
			return err
		}
		change := "updated"
		if got.Generation == before {
			change = "unchanged"
		}
		return e.showLine(got, "deployment/%s %s (generation %d)", got.Name, change, got.Generation)
	})
}

func deployPreview(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	var d deployFlags
	d.register(fs, true)
	vehicle := fs.String("vehicle", "", "the vehicle `id` to render and place for (required)")
	pos, err := e.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if *vehicle == "" {
		return usagef("--vehicle is required")
	}
	c, err := e.hub()
	if err != nil {
		return err
	}
	dep, err := c.deployment(ctx, pos[0])
	switch {
	case isStatus(err, http.StatusNotFound):
		if d.chart == "" || d.version == "" {
			return fmt.Errorf("no deployment %s: to preview a new one, give --chart and --version", pos[0])
		}
		dep = hubv1.Deployment{Name: pos[0]}
	case err != nil:
		return err
	}
	if err := d.apply(fs, &dep, e.stdin); err != nil {
		return err
	}
	var p hubv1.Preview
	if err := c.do(ctx, http.MethodPost, "/v1/preview", nil, hubv1.PreviewRequest{Deployment: dep, Vehicle: *vehicle}, &p); err != nil {
		return err
	}
	return e.show(p, func(w io.Writer) error { return writePreview(w, dep.Name, *vehicle, p) })
}

// writePreview prints a preview as YAML: the placement table in comments,
// then each half's objects as documents.
func writePreview(w io.Writer, name, vehicle string, p hubv1.Preview) error {
	var b strings.Builder
	match := "matches"
	if !p.Matches {
		match = "does NOT match"
	}
	fmt.Fprintf(&b, "Deployment %s for vehicle %s (its selector %s the vehicle).\n\n", name, vehicle, match)
	t := placementTable(p.Placement)
	if err := t.write(&b); err != nil {
		return err
	}
	for _, line := range strings.Split(strings.TrimRight(b.String(), "\n"), "\n") {
		fmt.Fprintln(w, strings.TrimRight("# "+line, " "))
	}
	halves := []struct {
		name string
		objs []json.RawMessage
	}{{"vehicle half", p.Vehicle}, {"cloud half, namespace " + p.CloudNamespace, p.Cloud}}
	for _, h := range halves {
		for _, o := range h.objs {
			y, err := yaml.Marshal(o)
			if err != nil {
				return fmt.Errorf("encode YAML: %w", err)
			}
			fmt.Fprintf(w, "---\n# %s\n%s", h.name, y)
		}
	}
	return nil
}

func placementTable(ps []hubv1.ComponentPlacement) *table {
	t := newTable("COMPONENT", "DEPLOYMENT", "POLICY", "PLACE", "REASON")
	for _, p := range ps {
		t.add(p.Component, p.Deployment, p.Policy, p.Place, p.Reason)
	}
	return t
}

func deployVersions(ctx context.Context, e *env, args []string) error {
	pos, c, err := e.connect(e.flags(), args, 1, 1)
	if err != nil {
		return err
	}
	base := "/v1/deployments/" + pathEscape(pos[0])
	var l hubv1.List[hubv1.Deployment]
	if err := c.get(ctx, base+"/versions", nil, &l); err != nil {
		return err
	}
	phases := map[int64]string{}
	if e.g.output == "table" {
		ros, err := listAll[hubv1.Rollout](ctx, c, base+"/rollouts", nil, 1000, 0)
		if err != nil {
			return err
		}
		for _, ro := range ros.Items {
			phases[ro.Generation] = ro.Phase
		}
	}
	return showList(e, l, "versions",
		[]string{"GENERATION", "CHART", "VERSION", "SELECTOR", "ROLLOUT", "UPDATED", "BY"},
		func(d hubv1.Deployment) []string {
			return []string{fmt.Sprint(d.Generation), d.Chart.Source + "/" + d.Chart.Name, d.Chart.Version, d.Selector,
				orDash(phases[d.Generation]), e.since(d.Updated), orDash(d.CreatedBy)}
		})
}

func deployRollback(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	to := fs.Int64("to", 0, "the `generation` whose spec to go back to (default: the one before the current)")
	pos, err := e.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if *to < 0 || given(fs, "to") && *to == 0 {
		return usagef("--to %d: want a generation from 1", *to)
	}
	c, err := e.hub()
	if err != nil {
		return err
	}
	var got hubv1.Deployment
	if err := c.do(ctx, http.MethodPost, "/v1/deployments/"+pathEscape(pos[0])+"/rollback", nil, hubv1.RollbackRequest{Generation: *to}, &got); err != nil {
		return err
	}
	from := *to
	if from == 0 {
		from = got.Generation - 2 // the one before the generation the rollback replaced
	}
	return e.showLine(got, "deployment/%s rolled back: generation %d has the spec of generation %d (chart %s/%s %s)",
		got.Name, got.Generation, from, got.Chart.Source, got.Chart.Name, got.Chart.Version)
}
