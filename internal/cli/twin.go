package cli

import (
	"context"
	"fmt"
	"io"
	"strings"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

var twinCommand = &command{
	name: "twin", args: "<vehicle>",
	summary: "Show a vehicle's digital twin: desired vs reported, placement, delta",
	help: `For each half (the vehicle's cluster, and its namespace in the cloud): the
desired revision the hub signed, the revision the agent applied and its
phase (Applying, Progressing, Healthy or Failed), the digest and expiry of
the desired revision, and how many of its objects the agent reports
healthy; then a half's failure, when its report has one (the revision, why,
the deployments, and the revision they were rolled back to). Then where
each component runs and why, and every way the report differs from what is
desired (a Failed half is a "failed" delta). -o json or -o yaml print the
twin as the hub serves it.`,
	run: twin,
}

func twin(ctx context.Context, e *env, args []string) error {
	pos, c, err := e.connect(e.flags(), args, 1, 1)
	if err != nil {
		return err
	}
	tw, err := c.vehicle(ctx, pos[0])
	if err != nil {
		return err
	}
	return e.show(tw, func(w io.Writer) error { return e.writeTwin(w, tw) })
}

func (e *env) writeTwin(w io.Writer, tw hubv1.Twin) error {
	v := tw.Vehicle
	f := &fields{}
	f.add("Vehicle", v.ID)
	f.add("Online", e.online(v))
	f.add("Labels", kv(v.Labels, ", "))
	if err := f.write(w); err != nil {
		return err
	}

	fmt.Fprintln(w)
	t := newTable("HALF", "DESIRED", "APPLIED", "PHASE", "DIGEST", "ISSUED", "EXPIRES", "HEALTHY", "REPORTED", "AGENT")
	var failures []hubv1.Reported
	for _, half := range []string{hubv1.HalfVehicle, hubv1.HalfCloud} {
		var d *hubv1.DesiredSummary
		for i := range tw.Desired {
			if tw.Desired[i].Half == half {
				d = &tw.Desired[i]
			}
		}
		var r *hubv1.Reported
		for i := range tw.Reported {
			if tw.Reported[i].Half == half {
				r = &tw.Reported[i]
			}
		}
		if d == nil && r == nil {
			continue
		}
		desired, digest, issued, expires := "-", "-", "-", "-"
		if d != nil {
			desired, digest = fmt.Sprint(d.Revision), shortDigest(d.Digest)
			issued, expires = e.relative(&d.IssuedAt), e.relative(&d.Expires)
		}
		applied, phase, reported, agent, healthy := "-", "-", "never", "-", "-"
		if r != nil {
			applied, phase, reported, agent = fmt.Sprint(r.AppliedRevision), orDash(r.Phase), e.relative(&r.Time), orDash(r.AgentVersion)
			if r.Failure != nil {
				failures = append(failures, *r)
			}
			n := 0
			for _, o := range r.Objects {
				if o.State == hubv1.StateHealthy {
					n++
				}
			}
			total := len(r.Objects)
			if d != nil {
				total = len(d.Objects)
			}
			healthy = fmt.Sprintf("%d/%d", n, total)
		}
		t.add(half, desired, applied, phase, digest, issued, expires, healthy, reported, agent)
	}
	if len(t.rows) == 0 {
		fmt.Fprintln(w, "No desired revision yet, and nothing reported.")
	} else if err := t.write(w); err != nil {
		return err
	}
	for _, r := range failures {
		if err := writeFailure(w, r); err != nil {
			return err
		}
	}

	fmt.Fprintln(w, "\nPlacement:")
	if len(tw.Placement) == 0 {
		fmt.Fprintln(w, "  <none>")
	} else if err := placementTable(tw.Placement).write(w); err != nil {
		return err
	}

	fmt.Fprintln(w, "\nDelta:")
	if len(tw.Delta) == 0 {
		_, err := fmt.Fprintln(w, "  <none>")
		return err
	}
	dt := newTable("HALF", "KIND", "OBJECT", "DETAIL")
	for _, d := range tw.Delta {
		dt.add(orDash(d.Half), d.Kind, orDash(d.Object), d.Detail)
	}
	return dt.write(w)
}

// writeFailure prints the failure a half's report carries: the revision,
// why, the deployments and what they went back to.
func writeFailure(w io.Writer, r hubv1.Reported) error {
	fl := r.Failure
	fmt.Fprintf(w, "\nFailure (%s half):\n", r.Half)
	back := "nothing (not rolled back)"
	if fl.RolledBackTo > 0 {
		back = fmt.Sprintf("revision %d", fl.RolledBackTo)
	}
	f := &fields{}
	f.add("  Revision", fmt.Sprint(fl.Revision))
	f.add("  Reason", fl.Reason)
	f.add("  Deployments", strings.Join(fl.Deployments, ", "))
	f.add("  Rolled back to", back)
	return f.write(w)
}
