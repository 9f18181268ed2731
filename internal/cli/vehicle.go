package cli

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

var vehicleCommands = []*command{
	{
		group: "vehicle", name: "list", aliases: []string{"ls"},
		summary: "List vehicles, filtered by label selector and state",
		help: `One page at a time (--limit per page); the command says how to get the
next. --all follows every page.

Examples:
  misaki vehicle list -l 'fleet=eu,tier in (a,b)' --state online
  misaki vehicle list --all -o json`,
		run: vehicleList,
	},
	{
		group: "vehicle", name: "show", aliases: []string{"get", "describe"}, args: "<id>",
		summary: "Show a vehicle: labels, resources, facts, enrolment and bootstrap tokens",
		run:     vehicleShow,
	},
	{
		group: "vehicle", name: "create", args: "<id>",
		summary: "Register a vehicle (before its bootstrap token)",
		help: `Examples:
  misaki vehicle create car-1 --label fleet=eu --label tier=a --allocatable cpu=2,memory=4Gi`,
		run: vehicleCreate,
	},
	{
		group: "vehicle", name: "label", args: "<id> key=value... key-...",
		summary: "Set and remove a vehicle's labels (kubectl label semantics)",
		help: `key=value sets a label, key- removes one. Changing a label that has a
different value needs --overwrite.

Examples:
  misaki vehicle label car-1 fleet=eu tier-
  misaki vehicle label car-1 fleet=us --overwrite`,
		run: vehicleLabel,
	},
	{
		group: "vehicle", name: "token", args: "<id>",
		summary: "Create a one-time bootstrap token the vehicle's agent enrols with",
		help: `In table output the token is printed alone, so a script can capture it:
  TOKEN=$(misaki vehicle token car-1 --create)
The hub keeps only a hash of the secret: this is the only time it is shown.`,
		run: vehicleToken,
	},
	{
		group: "vehicle", name: "delete", aliases: []string{"rm"}, args: "<id>",
		summary: "Forget a vehicle",
		run:     deleteNamed("/v1/vehicles/", "vehicle", "deleted"),
	},
}

func vehicleList(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	sel := fs.String("selector", "", "label `selector`, such as 'fleet=eu,tier!=b'")
	fs.StringVar(sel, "l", "", "")
	state := fs.String("state", "", "only online or offline vehicles")
	limit := fs.Int("limit", 100, "vehicles per page, 1 to 1000")
	all := fs.Bool("all", false, "follow every page")
	after := fs.String("after", "", "start after this `cursor` (the next page of an earlier list)")
	if _, err := e.parse(fs, args, 0, 0); err != nil {
		return err
	}
	switch *state {
	case "", "online", "offline":
	default:
		return usagef("--state %s: want online or offline", *state)
	}
	if *limit < 1 || *limit > 1000 {
		return usagef("--limit %d: want 1 to 1000", *limit)
	}
	c, err := e.hub()
	if err != nil {
		return err
	}
	q := url.Values{}
	if *sel != "" {
		q.Set("selector", *sel)
	}
	if *state != "" {
		q.Set("state", *state)
	}
	if *after != "" {
		q.Set("after", *after)
	}
	var l hubv1.List[hubv1.Vehicle]
	if *all {
		l, err = listAll[hubv1.Vehicle](ctx, c, "/v1/vehicles", q, *limit, 0)
	} else {
		q.Set("limit", fmt.Sprint(*limit))
		err = c.get(ctx, "/v1/vehicles", q, &l)
	}
	if err != nil {
		return err
	}
	err = showList(e, l, "vehicles",
		[]string{"ID", "ONLINE", "LAST-SEEN", "ENROLLED", "KUBERNETES", "ALLOCATABLE", "LABELS", "AGE"},
		func(v hubv1.Vehicle) []string {
			return []string{v.ID, yesNo(v.Online), e.relative(v.LastSeen), yesNo(v.Enrolled != nil),
				orDash(v.Facts.KubernetesVersion), orDash(kv(v.Allocatable, ",")), kv(v.Labels, ","), e.since(v.Created)}
		})
	if err == nil && l.Next != "" && e.g.output == "table" {
		fmt.Fprintf(e.stderr, "More vehicles: add --after %s for the next page, or --all.\n", l.Next)
	}
	return err
}

func vehicleShow(ctx context.Context, e *env, args []string) error {
	pos, c, err := e.connect(e.flags(), args, 1, 1)
	if err != nil {
		return err
	}
	tw, err := c.vehicle(ctx, pos[0])
	if err != nil {
		return err
	}
	v := tw.Vehicle
	if e.g.output != "table" {
		return e.show(v, nil)
	}
	var toks hubv1.List[hubv1.BootstrapToken]
	if err := c.get(ctx, "/v1/vehicles/"+pathEscape(v.ID)+"/tokens", nil, &toks); err != nil {
		return err
	}
	f := &fields{}
	f.add("ID", v.ID)
	f.add("Labels", kv(v.Labels, "\n"))
	f.add("Online", e.online(v))
	if v.Enrolled != nil {
		f.add("Enrolled", e.ago(v.Enrolled))
		f.add("Certificate expires", e.ago(v.CertificateExpires))
	} else {
		f.add("Enrolled", "no (misaki vehicle token "+v.ID+" makes a bootstrap token)")
	}
	f.add("Capacity", kv(v.Capacity, ", "))
	f.add("Allocatable", kv(v.Allocatable, ", "))
	f.add("Kubernetes", strings.TrimSpace(v.Facts.KubernetesVersion+" "+v.Facts.Arch))
	f.add("API versions", fmt.Sprint(len(v.Facts.APIVersions)))
	f.add("CRDs", strings.Join(v.Facts.CRDs, "\n"))
	f.add("Created", e.ago(&v.Created))
	f.add("Resource version", fmt.Sprint(v.ResourceVersion))
	if err := f.write(e.stdout); err != nil {
		return err
	}
	if len(toks.Items) > 0 {
		fmt.Fprint(e.stdout, "\nBootstrap tokens:\n")
		t := newTable("ID", "EXPIRES", "USED", "CREATED-BY", "AGE")
		for _, b := range toks.Items {
			used := "no"
			if b.Used != nil {
				used = e.relative(b.Used)
			}
			t.add(b.ID, e.relative(&b.Expires), used, b.CreatedBy, e.since(b.Created))
		}
		return t.write(e.stdout)
	}
	return nil
}

// online is "yes" or "no", and when the vehicle was last seen.
func (e *env) online(v hubv1.Vehicle) string {
	s := yesNo(v.Online)
	if v.LastSeen != nil {
		s += ", last seen " + e.relative(v.LastSeen)
	}
	return s
}

func vehicleCreate(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	var labels, alloc, capacity multiString
	fs.Var(&labels, "label", "a label, `key=value` (or k1=v1,k2=v2); may be repeated")
	fs.Var(&alloc, "allocatable", "allocatable resources, such as `cpu=2,memory=4Gi` (the agent's reports replace them)")
	fs.Var(&capacity, "capacity", "capacity, such as `cpu=4,memory=8Gi` (the agent's reports replace it)")
	pos, err := e.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	v, err := newVehicle(pos[0], labels, alloc, capacity)
	if err != nil {
		return err
	}
	c, err := e.hub()
	if err != nil {
		return err
	}
	var got hubv1.Vehicle
	if err := c.do(ctx, http.MethodPost, "/v1/vehicles", nil, v, &got); err != nil {
		return err
	}
	return e.showLine(got, "vehicle/%s created", got.ID)
}

func newVehicle(id string, labels, alloc, capacity []string) (hubv1.Vehicle, error) {
	v := hubv1.Vehicle{ID: id}
	l, err := keyValues("label", labels)
	if err != nil {
		return v, err
	}
	a, err := keyValues("allocatable", alloc)
	if err != nil {
		return v, err
	}
	cp, err := keyValues("capacity", capacity)
	if err != nil {
		return v, err
	}
	if len(l) > 0 {
		v.Labels = l
	}
	if len(a) > 0 {
		v.Allocatable = a
	}
	if len(cp) > 0 {
		v.Capacity = cp
	}
	return v, nil
}

// labelChange is what "vehicle label" asks: labels to set and to remove.
type labelChange struct {
	set    map[string]string
	remove []string
}

func parseLabelArgs(args []string) (labelChange, error) {
	ch := labelChange{set: map[string]string{}}
	for _, a := range args {
		if k, v, ok := strings.Cut(a, "="); ok {
			if k == "" {
				return ch, usagef("label %q: want key=value", a)
			}
			ch.set[k] = v
			continue
		}
		if k, ok := strings.CutSuffix(a, "-"); ok && k != "" {
			ch.remove = append(ch.remove, k)
			continue
		}
		return ch, usagef("label %q: want key=value to set or key- to remove", a)
	}
	for _, k := range ch.remove {
		if _, ok := ch.set[k]; ok {
			return ch, usagef("label %q: cannot both set and remove it", k)
		}
	}
	return ch, nil
}

// apply changes labels as kubectl label does: an existing key with another
// value needs overwrite; removing a missing key is a warning.
func (ch labelChange) apply(labels map[string]string, overwrite bool) (out map[string]string, warnings []string, err error) {
	out = maps.Clone(labels)
	if out == nil {
		out = map[string]string{}
	}
	for _, k := range slices.Sorted(maps.Keys(ch.set)) {
		v := ch.set[k]
		if old, ok := out[k]; ok && old != v && !overwrite {
			return nil, nil, fmt.Errorf("label %q already has a value (%s), and --overwrite is false", k, old)
		}
		out[k] = v
	}
	for _, k := range ch.remove {
		if _, ok := out[k]; !ok {
			warnings = append(warnings, fmt.Sprintf("label %q not found", k))
		}
		delete(out, k)
	}
	return out, warnings, nil
}

func vehicleLabel(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	overwrite := fs.Bool("overwrite", false, "change labels that already have a different value")
	pos, err := e.parse(fs, args, 2, -1)
	if err != nil {
		return err
	}
	ch, err := parseLabelArgs(pos[1:])
	if err != nil {
		return err
	}
	c, err := e.hub()
	if err != nil {
		return err
	}
	id := pos[0]
	// Read, change, write back with the resource version read; a report
	// that lands in between makes the hub refuse, and we read again.
	return retryOnConflict(5, func() error {
		tw, err := c.vehicle(ctx, id)
		if err != nil {
			return err
		}
		labels, warnings, err := ch.apply(tw.Vehicle.Labels, *overwrite)
		if err != nil {
			return err
		}
		for _, w := range warnings {
			fmt.Fprintf(e.stderr, "warning: %s\n", w)
		}
		if maps.Equal(labels, tw.Vehicle.Labels) || len(labels) == 0 && len(tw.Vehicle.Labels) == 0 {
			return e.showLine(tw.Vehicle, "vehicle/%s not labeled", id)
		}
		var got hubv1.Vehicle
		if err := c.do(ctx, http.MethodPatch, "/v1/vehicles/"+pathEscape(id), nil, labelPatch(labels, tw.Vehicle.ResourceVersion), &got); err != nil {
			return err
		}
		return e.showLine(got, "vehicle/%s labeled", id)
	})
}

// labelPatch is the PATCH that sets a vehicle's labels to labels, naming
// the resource version they were read at. hubv1.VehiclePatch omits an
// empty Labels map, which the hub reads as "labels unchanged"; removing
// the last label needs "labels": {} on the wire, so Labels is written
// here always.
func labelPatch(labels map[string]string, resourceVersion int64) any {
	return struct {
		hubv1.VehiclePatch
		Labels map[string]string `json:"labels"`
	}{hubv1.VehiclePatch{ResourceVersion: resourceVersion}, labels}
}

func vehicleToken(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	ttl := fs.Duration("ttl", 0, "how long the token may be used, up to 720h (default: the hub's, 24h)")
	create := fs.Bool("create", false, "create the vehicle first when it does not exist")
	var labels multiString
	fs.Var(&labels, "label", "with --create: a label of the new vehicle, `key=value`; may be repeated")
	pos, err := e.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if len(labels) > 0 && !*create {
		return usagef("--label is for a vehicle --create makes")
	}
	if *ttl < 0 {
		return usagef("--ttl %s: want a positive duration", *ttl)
	}
	id := pos[0]
	c, err := e.hub()
	if err != nil {
		return err
	}
	if *create {
		_, err := c.vehicle(ctx, id)
		if isStatus(err, http.StatusNotFound) {
			v, verr := newVehicle(id, labels, nil, nil)
			if verr != nil {
				return verr
			}
			if err := c.do(ctx, http.MethodPost, "/v1/vehicles", nil, v, nil); err != nil {
				return err
			}
			fmt.Fprintf(e.stderr, "vehicle/%s created\n", id)
		} else if err != nil {
			return err
		}
	}
	var req hubv1.TokenRequest
	if *ttl > 0 {
		req.TTL = ttl.String()
	}
	var tok hubv1.BootstrapToken
	err = c.do(ctx, http.MethodPost, "/v1/vehicles/"+pathEscape(id)+"/tokens", nil, req, &tok)
	if isStatus(err, http.StatusNotFound) && !*create {
		return fmt.Errorf("%w; or add --create", err)
	}
	if err != nil {
		return err
	}
	return e.showSecret(tok, fmt.Sprintf("bootstrap token %s for vehicle/%s, valid until %s (shown once):",
		tok.ID, tok.VehicleID, tok.Expires.UTC().Format(time.RFC3339)), tok.Token)
}
