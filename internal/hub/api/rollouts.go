package api

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/agent/gate"
	"github.com/misaki-io/misaki/internal/hub/rollout"
	"github.com/misaki-io/misaki/internal/hub/store"
)

// Kicker is told when a rollout may move: Kick when an operator changed a
// deployment, a vehicle or a rollout (a pass at once), Nudge when a report
// arrived (a pass soon, coalesced). rollout.Runner is the implementation.
type Kicker interface {
	Kick()
	Nudge()
}

func (s *Server) kickRollouts() {
	if s.opts.Rollouts != nil {
		s.opts.Rollouts.Kick()
	}
}

func (s *Server) nudgeRollouts() {
	if s.opts.Rollouts != nil {
		s.opts.Rollouts.Nudge()
	}
}

// parseGate checks a gate with the agent's own parser.
func parseGate(g string) error {
	_, err := gate.Parse(g)
	return err
}

// checkRollout validates d's rollout policy; an empty one ({}) is none.
func checkRollout(d *hubv1.Deployment) error {
	if d.Rollout == nil {
		return nil
	}
	p := d.Rollout
	if p.Canary == nil && len(p.Waves) == 0 && p.MaxUnavailable == "" && p.BakeTime == "" && p.WaveDeadline == "" && p.FailureThreshold == "" && len(p.Gates) == 0 {
		d.Rollout = nil
		return nil
	}
	if _, err := rollout.ParsePolicy(p, parseGate); err != nil {
		var fe *rollout.FieldError
		if errors.As(err, &fe) {
			return badRequest(fe.Field, "%v", err)
		}
		return badRequest("rollout", "%v", err)
	}
	return nil
}

func (s *Server) listAllRollouts(w http.ResponseWriter, r *http.Request) error {
	f := store.RolloutFilter{}
	switch r.URL.Query().Get("active") {
	case "", "false":
	case "true":
		f.Active = true
	default:
		return badRequest("active", "active: want true or false, got %q", r.URL.Query().Get("active"))
	}
	return s.listRollouts(w, r, f)
}

func (s *Server) listDeploymentRollouts(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	if _, err := s.st.GetDeployment(r.Context(), name); err != nil {
		return err
	}
	return s.listRollouts(w, r, store.RolloutFilter{Deployment: name})
}

func (s *Server) listRollouts(w http.ResponseWriter, r *http.Request, f store.RolloutFilter) error {
	p, err := page(r)
	if err != nil {
		return err
	}
	rs, next, err := s.st.ListRollouts(r.Context(), f, p)
	if err != nil {
		return err
	}
	writeRead(w, r, hubv1.List[hubv1.Rollout]{Items: orEmpty(rs), Next: next})
	return nil
}

// generation reads {generation}.
func generation(r *http.Request) (int64, error) {
	g, err := strconv.ParseInt(r.PathValue("generation"), 10, 64)
	if err != nil || g < 1 {
		return 0, badRequest("generation", "generation: want a positive number, got %q", r.PathValue("generation"))
	}
	return g, nil
}

func (s *Server) getRollout(w http.ResponseWriter, r *http.Request) error {
	g, err := generation(r)
	if err != nil {
		return err
	}
	ro, err := s.st.GetRollout(r.Context(), r.PathValue("name"), g)
	if err != nil {
		return err
	}
	writeRead(w, r, ro)
	return nil
}

func (s *Server) listRolloutVehicles(w http.ResponseWriter, r *http.Request) error {
	g, err := generation(r)
	if err != nil {
		return err
	}
	p, err := page(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	f := store.RolloutVehicleFilter{State: q.Get("state")}
	switch f.State {
	case "", hubv1.VehiclePending, hubv1.VehicleOffline, hubv1.VehicleApplying, hubv1.VehicleWaiting, hubv1.VehicleHealthy, hubv1.VehicleFailed, hubv1.VehicleSuperseded:
	default:
		return badRequest("state", "state: want pending, offline, applying, waiting, healthy, failed or superseded, got %q", f.State)
	}
	if ws := q.Get("wave"); ws != "" {
		n, err := strconv.Atoi(ws)
		if err != nil || n < 0 {
			return badRequest("wave", "wave: want a wave index from 0, got %q", ws)
		}
		f.Wave = &n
	}
	switch q.Get("released") {
	case "", "false":
	case "true":
		f.Released = true
	default:
		return badRequest("released", "released: want true or false, got %q", q.Get("released"))
	}
	vs, next, err := s.st.ListRolloutVehicles(r.Context(), r.PathValue("name"), g, f, p)
	if err != nil {
		return err
	}
	writeRead(w, r, hubv1.List[hubv1.RolloutVehicle]{Items: orEmpty(vs), Next: next})
	return nil
}

// action reads an optional RolloutAction body and the rollout it names.
func (s *Server) action(r *http.Request) (hubv1.Rollout, hubv1.RolloutAction, error) {
	var a hubv1.RolloutAction
	if r.ContentLength != 0 {
		if err := decode(r, &a); err != nil && !errors.Is(err, io.EOF) {
			return hubv1.Rollout{}, a, err
		}
	}
	g, err := generation(r)
	if err != nil {
		return hubv1.Rollout{}, a, err
	}
	ro, err := s.st.GetRollout(r.Context(), r.PathValue("name"), g)
	return ro, a, err
}

func because(actor, verb, reason string) string {
	if reason == "" {
		return fmt.Sprintf("%s by %s", verb, actor)
	}
	return fmt.Sprintf("%s by %s: %s", verb, actor, reason)
}

func (s *Server) pauseRollout(w http.ResponseWriter, r *http.Request) error {
	ro, a, err := s.action(r)
	if err != nil {
		return err
	}
	if ro.Phase != hubv1.RolloutProgressing {
		return errorf(http.StatusConflict, "phase", "rollout %s/%d is %s: only a Progressing rollout can be paused", ro.Deployment, ro.Generation, ro.Phase)
	}
	actor := principal(r.Context()).Actor()
	ro.Phase, ro.Reason, ro.Updated = hubv1.RolloutPaused, because(actor, "paused", a.Reason), s.clk.Now().UTC()
	return s.writeRollout(w, r, ro, "pause", a.Reason)
}

func (s *Server) resumeRollout(w http.ResponseWriter, r *http.Request) error {
	ro, a, err := s.action(r)
	if err != nil {
		return err
	}
	if ro.Phase != hubv1.RolloutPaused {
		return errorf(http.StatusConflict, "phase", "rollout %s/%d is %s: only a Paused rollout can be resumed", ro.Deployment, ro.Generation, ro.Phase)
	}
	pol, err := rollout.ParsePolicy(&ro.Policy, nil)
	if err != nil {
		return errorf(http.StatusUnprocessableEntity, "policy", "rollout %s/%d: %v", ro.Deployment, ro.Generation, err)
	}
	now := s.clk.Now().UTC()
	ro = rollout.Resume(ro, pol, now)
	ro.Updated = now
	return s.writeRollout(w, r, ro, "resume", a.Reason)
}

func (s *Server) abortRollout(w http.ResponseWriter, r *http.Request) error {
	ro, a, err := s.action(r)
	if err != nil {
		return err
	}
	if ro.Phase != hubv1.RolloutProgressing && ro.Phase != hubv1.RolloutPaused {
		return errorf(http.StatusConflict, "phase", "rollout %s/%d is %s: only a Progressing or Paused rollout can be aborted (roll back to undo a completed one)", ro.Deployment, ro.Generation, ro.Phase)
	}
	actor := principal(r.Context()).Actor()
	ro.Phase, ro.Reason, ro.Updated = hubv1.RolloutAborted, because(actor, "aborted", a.Reason), s.clk.Now().UTC()
	if err := s.writeRollout(w, r, ro, "abort", a.Reason); err != nil {
		return err
	}
	// The vehicles it released go back to the generation before.
	p := store.Page{Limit: 1000}
	for {
		vs, next, err := s.st.ListRolloutVehicles(r.Context(), ro.Deployment, ro.Generation, store.RolloutVehicleFilter{Released: true}, p)
		if err != nil {
			return err
		}
		ds := make([]store.Dirty, len(vs))
		for i, v := range vs {
			ds[i] = store.Dirty{ID: v.Vehicle}
		}
		if err := s.markDirty(r.Context(), ds...); err != nil {
			return err
		}
		if next == "" {
			return nil
		}
		p.After = next
	}
}

// writeRollout stores an operator's change to a rollout, audits it and
// answers the stored rollout.
func (s *Server) writeRollout(w http.ResponseWriter, r *http.Request, ro hubv1.Rollout, action, reason string) error {
	got, err := s.st.UpdateRollout(r.Context(), ro, nil)
	if err != nil {
		return err
	}
	s.audit(r, action, fmt.Sprintf("deployments/%s/rollouts/%d", ro.Deployment, ro.Generation), reason)
	s.kickRollouts()
	writeJSON(w, http.StatusOK, got)
	return nil
}

func (s *Server) listVersions(w http.ResponseWriter, r *http.Request) error {
	vs, err := s.st.ListDeploymentVersions(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeRead(w, r, hubv1.List[hubv1.Deployment]{Items: orEmpty(vs)})
	return nil
}

// rollback writes a new generation with an earlier one's spec; it rolls
// out by that spec's policy like any other change.
func (s *Server) rollback(w http.ResponseWriter, r *http.Request) error {
	var req hubv1.RollbackRequest
	if r.ContentLength != 0 {
		if err := decode(r, &req); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
	}
	name := r.PathValue("name")
	cur, err := s.st.GetDeployment(r.Context(), name)
	if err != nil {
		return err
	}
	to := req.Generation
	if to == 0 {
		to = cur.Generation - 1
	}
	if to < 1 || to >= cur.Generation {
		return badRequest("generation", "generation: want an earlier generation than the current %d, got %d", cur.Generation, to)
	}
	old, err := s.st.GetDeploymentVersion(r.Context(), name, to)
	if errors.Is(err, store.ErrNotFound) {
		return errorf(http.StatusNotFound, "generation", "deployment %s has no generation %d kept", name, to)
	} else if err != nil {
		return err
	}
	// The old spec's chart is pinned and its bytes are in the store, so
	// the rollback needs no chart source.
	d := old
	d.Generation, d.Created, d.Updated = cur.Generation, cur.Created, s.clk.Now().UTC()
	d.CreatedBy = principal(r.Context()).Actor()
	got, err := s.st.UpdateDeployment(r.Context(), d)
	if err != nil {
		return err
	}
	s.audit(r, "rollback", "deployments/"+name, fmt.Sprintf("generation %d has the spec of generation %d: chart %s %s, selector %q", got.Generation, to, got.Chart.Name, got.Chart.Version, got.Selector))
	s.kickRollouts()
	writeJSON(w, http.StatusOK, got)
	return nil
}
