package api

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/store"
)

// defaultWait is a long-poll's wait when the request names none.
const defaultWait = 30 * time.Second

// getDesired is the vehicle's long-poll: the newest signed revision above
// ?after= at once, or 304 once ?wait= has passed without one.
func (s *Server) getDesired(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	q := r.URL.Query()
	half := q.Get("half")
	if half == "" {
		half = hubv1.HalfVehicle
	}
	if half != hubv1.HalfVehicle && half != hubv1.HalfCloud {
		return badRequest("half", "half: want vehicle or cloud, got %q", half)
	}
	if err := cloudOnly(principal(r.Context()), half); err != nil {
		return err
	}
	after, wait, err := s.longPoll(q, "a revision number")
	if err != nil {
		return err
	}
	if _, err := s.st.GetVehicle(r.Context(), id); err != nil {
		return err
	}
	var timer <-chan time.Time
	for {
		// Register before reading, so a write between the read and the
		// wait still wakes this poll.
		woken, cancel := s.waker.Wait(id, half)
		d, err := s.st.GetDesired(r.Context(), id, half)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			cancel()
			return err
		}
		if err == nil && d.Revision > after {
			cancel()
			d.Desired.RootVersion = s.trust.Version()
			writeJSON(w, http.StatusOK, d.Desired)
			return nil
		}
		if timer == nil {
			if wait == 0 {
				cancel()
				w.WriteHeader(http.StatusNotModified)
				return nil
			}
			t := s.clk.NewTimer(wait)
			defer t.Stop()
			timer = t.C()
		}
		s.metrics.waiting.Inc()
		select {
		case <-woken:
			s.metrics.waiting.Dec()
			cancel()
			continue
		case <-timer:
			s.metrics.waiting.Dec()
			cancel()
			w.WriteHeader(http.StatusNotModified)
			return nil
		case <-r.Context().Done():
			s.metrics.waiting.Dec()
			cancel()
			return nil
		}
	}
}

// longPoll reads a long-poll's ?after= (what, such as "a revision
// number", names it in an error) and ?wait= (default 30s, capped by the
// hub's max wait).
func (s *Server) longPoll(q url.Values, what string) (after int64, wait time.Duration, err error) {
	if a := q.Get("after"); a != "" {
		n, err := strconv.ParseInt(a, 10, 64)
		if err != nil || n < 0 {
			return 0, 0, badRequest("after", "after: want %s, got %q", what, a)
		}
		after = n
	}
	wait = defaultWait
	if ws := q.Get("wait"); ws != "" {
		d, err := time.ParseDuration(ws)
		if err != nil || d < 0 {
			return 0, 0, badRequest("wait", "wait: want a duration such as 30s, got %q", ws)
		}
		wait = min(d, s.opts.MaxWait)
	}
	return after, wait, nil
}

func (s *Server) putReported(w http.ResponseWriter, r *http.Request) error {
	var rep hubv1.Reported
	if err := decode(r, &rep); err != nil {
		return err
	}
	if rep.Half == "" {
		rep.Half = hubv1.HalfVehicle
	}
	if rep.Half != hubv1.HalfVehicle && rep.Half != hubv1.HalfCloud {
		return badRequest("half", "half: want vehicle or cloud, got %q", rep.Half)
	}
	p := principal(r.Context())
	if err := cloudOnly(p, rep.Half); err != nil {
		return err
	}
	if p.Scope == store.ScopeCloudAgent {
		// Facts, capacity and allocatable describe the vehicle's own
		// cluster and drive its rendering and placement; the cloud
		// cluster's are not the vehicle's.
		rep.Facts, rep.Capacity, rep.Allocatable = nil, nil, nil
	}
	if rep.AppliedRevision < 0 {
		return badRequest("appliedRevision", "appliedRevision: must not be negative")
	}
	switch rep.Phase {
	case "", hubv1.PhaseApplying, hubv1.PhaseProgressing, hubv1.PhaseHealthy, hubv1.PhaseFailed, hubv1.PhaseWaiting:
	default:
		return badRequest("phase", "phase: want Applying, Progressing, Healthy, Failed or Waiting (or none), got %q", rep.Phase)
	}
	if rep.Waiting < 0 || rep.Waiting > 0 && rep.Waiting <= rep.AppliedRevision {
		return badRequest("waiting", "waiting: want 0 or a revision above the applied %d, got %d", rep.AppliedRevision, rep.Waiting)
	}
	if rep.Failure != nil && rep.Failure.Revision <= 0 {
		return badRequest("failure.revision", "failure.revision: want the failed revision (above 0), got %d", rep.Failure.Revision)
	}
	for i, o := range rep.Objects {
		switch o.State {
		case hubv1.StateApplied, hubv1.StateProgressing, hubv1.StateHealthy, hubv1.StateError:
		default:
			return badRequest(fmt.Sprintf("objects[%d].state", i), "objects[%d].state: want applied, progressing, healthy or error, got %q", i, o.State)
		}
		if o.Kind == "" || o.Name == "" {
			return badRequest(fmt.Sprintf("objects[%d]", i), "objects[%d]: kind and name are required", i)
		}
	}
	if err := validateResources("capacity", rep.Capacity); err != nil {
		return err
	}
	if err := validateResources("allocatable", rep.Allocatable); err != nil {
		return err
	}
	id := r.PathValue("id")
	rep.Time = s.clk.Now().UTC()
	changed, err := s.st.PutReported(r.Context(), id, rep)
	if err != nil {
		return err
	}
	if changed {
		// New facts or resources can change rendering and placement.
		if err := s.markDirty(r.Context(), store.Dirty{ID: id}); err != nil {
			return err
		}
	}
	// A report may let a rollout move (a wave's last answer).
	s.nudgeRollouts()
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// getTwin is the digital twin: desired and reported side by side, and
// the delta.
func (s *Server) getTwin(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	v, err := s.st.GetVehicle(r.Context(), id)
	if err != nil {
		return err
	}
	s.online(&v)
	reps, err := s.st.GetReported(r.Context(), id)
	if err != nil {
		return err
	}
	t := hubv1.Twin{Vehicle: v, Desired: []hubv1.DesiredSummary{}, Reported: orEmpty(reps), Delta: []hubv1.Delta{}, Placement: []hubv1.ComponentPlacement{}}
	for _, half := range []string{hubv1.HalfVehicle, hubv1.HalfCloud} {
		d, err := s.st.GetDesired(r.Context(), id, half)
		if errors.Is(err, store.ErrNotFound) {
			continue
		} else if err != nil {
			return err
		}
		t.Desired = append(t.Desired, hubv1.DesiredSummary{Half: half, Revision: d.Revision, Digest: d.Digest, IssuedAt: d.IssuedAt, Expires: d.Expires, Objects: orEmpty(d.Objects)})
		if half == hubv1.HalfVehicle || len(t.Placement) == 0 {
			t.Placement = orEmpty(d.Placement)
		}
		var rep *hubv1.Reported
		for i := range reps {
			if reps[i].Half == half {
				rep = &reps[i]
			}
		}
		t.Delta = append(t.Delta, delta(half, d, rep)...)
	}
	if s.issuer != nil {
		if msg := s.issuer.Error(id); msg != "" {
			t.Delta = append(t.Delta, hubv1.Delta{Kind: "error", Detail: msg})
		}
	}
	writeRead(w, r, t)
	return nil
}

// delta lists how a half's report differs from its desired revision.
func delta(half string, d store.Desired, rep *hubv1.Reported) []hubv1.Delta {
	var out []hubv1.Delta
	if rep == nil {
		return []hubv1.Delta{{Half: half, Kind: "revision", Detail: fmt.Sprintf("desired revision %d, nothing reported", d.Revision)}}
	}
	if rep.AppliedRevision < d.Revision {
		detail := fmt.Sprintf("desired revision %d, applied %d", d.Revision, rep.AppliedRevision)
		if rep.Refused != nil {
			detail += fmt.Sprintf("; revision %d refused: %s", rep.Refused.Revision, rep.Refused.Reason)
		}
		out = append(out, hubv1.Delta{Half: half, Kind: "revision", Detail: detail})
	}
	if rep.Phase == hubv1.PhaseWaiting {
		var gates []string
		for _, g := range rep.Gates {
			if !g.Holds {
				gates = append(gates, g.Name+" ("+g.Reason+")")
			}
		}
		out = append(out, hubv1.Delta{Half: half, Kind: "waiting", Detail: fmt.Sprintf("revision %d waits for %s", rep.Waiting, strings.Join(gates, ", "))})
	}
	failed := rep.Phase == hubv1.PhaseFailed
	if failed {
		out = append(out, hubv1.Delta{Half: half, Kind: "failed", Detail: failureDetail(rep)})
	}
	reported := map[string]hubv1.ObjectStatus{}
	for _, o := range rep.Objects {
		reported[objectName(o)] = o
	}
	want := map[string]bool{}
	for _, name := range d.Objects {
		want[name] = true
		o, ok := reported[name]
		switch {
		case !ok:
			out = append(out, hubv1.Delta{Half: half, Kind: "missing", Object: name, Detail: "desired, not reported"})
		case o.State != hubv1.StateHealthy:
			detail := o.State
			if o.Reason != "" {
				detail += ": " + o.Reason
			}
			// In a failed half a non-ready object is part of the failure:
			// said once, as failed, not also as unhealthy.
			kind := "unhealthy"
			if failed {
				kind = "failed"
			}
			out = append(out, hubv1.Delta{Half: half, Kind: kind, Object: name, Detail: detail})
		}
	}
	var extra []string
	for name := range reported {
		if !want[name] {
			extra = append(extra, name)
		}
	}
	slices.Sort(extra)
	for _, name := range extra {
		out = append(out, hubv1.Delta{Half: half, Kind: "extra", Object: name, Detail: "reported, not desired"})
	}
	return out
}

// failureDetail says what failed in a Failed report: the revision, the
// reason, the deployments and what they went back to.
func failureDetail(rep *hubv1.Reported) string {
	f := rep.Failure
	if f == nil {
		return fmt.Sprintf("revision %d failed (the agent gave no reason)", rep.AppliedRevision)
	}
	detail := fmt.Sprintf("revision %d failed", f.Revision)
	if f.Reason != "" {
		detail += ": " + f.Reason
	}
	if len(f.Deployments) > 0 {
		detail += "; deployments " + strings.Join(f.Deployments, ", ")
	}
	if f.RolledBackTo > 0 {
		detail += fmt.Sprintf("; rolled back to revision %d", f.RolledBackTo)
	} else {
		detail += "; not rolled back"
	}
	return detail
}

func objectName(o hubv1.ObjectStatus) string {
	if o.Namespace != "" {
		return o.Kind + "/" + o.Namespace + "/" + o.Name
	}
	return o.Kind + "/" + o.Name
}
