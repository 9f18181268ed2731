package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/catalog"
	"github.com/misaki-io/misaki/internal/hub/desired"
	"github.com/misaki-io/misaki/internal/hub/store"
)

func (s *Server) listDeployments(w http.ResponseWriter, r *http.Request) error {
	p, err := page(r)
	if err != nil {
		return err
	}
	ds, next, err := s.st.ListDeployments(r.Context(), p)
	if err != nil {
		return err
	}
	writeRead(w, r, hubv1.List[hubv1.Deployment]{Items: orEmpty(ds), Next: next})
	return nil
}

func (s *Server) allDeployments(r *http.Request) ([]hubv1.Deployment, error) {
	var all []hubv1.Deployment
	p := store.Page{Limit: 500}
	for {
		ds, next, err := s.st.ListDeployments(r.Context(), p)
		if err != nil {
			return nil, err
		}
		all = append(all, ds...)
		if next == "" {
			return all, nil
		}
		p.After = next
	}
}

func (s *Server) getDeployment(w http.ResponseWriter, r *http.Request) error {
	d, err := s.st.GetDeployment(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeRead(w, r, d)
	return nil
}

// checkDeployment validates d, resolves and pins its chart version, and
// checks its values (and each customization's) against the chart's
// schema. On success d.Chart.Digest is the pinned digest and the chart's
// bytes are in the store.
func (s *Server) checkDeployment(ctx context.Context, d *hubv1.Deployment) error {
	if errs := validation.IsDNS1123Label(d.Name); len(errs) > 0 {
		return badRequest("name", "name: %q: %s", d.Name, strings.Join(errs, "; "))
	}
	if d.Namespace != "" {
		if errs := validation.IsDNS1123Label(d.Namespace); len(errs) > 0 {
			return badRequest("namespace", "namespace: %q: %s", d.Namespace, strings.Join(errs, "; "))
		}
	}
	if _, err := labels.Parse(d.Selector); err != nil {
		return badRequest("selector", "selector: %q does not parse: %v", d.Selector, err)
	}
	for i, c := range d.Customizations {
		if c.Name == "" {
			return badRequest(fmt.Sprintf("customizations[%d].name", i), "customizations[%d].name is required", i)
		}
		if _, err := labels.Parse(c.Selector); err != nil {
			return badRequest(fmt.Sprintf("customizations[%d].selector", i), "customizations[%d] (%s): selector %q does not parse: %v", i, c.Name, c.Selector, err)
		}
	}
	for comp, p := range d.Placement {
		if !validPlacement(p) {
			return badRequest("placement", "placement.%s: want vehicle, cloud or auto, got %q", comp, p)
		}
	}
	if d.DefaultPlacement != "" && !validPlacement(d.DefaultPlacement) {
		return badRequest("defaultPlacement", "defaultPlacement: want vehicle, cloud or auto, got %q", d.DefaultPlacement)
	}
	if err := checkHealth(d); err != nil {
		return err
	}
	if err := checkRollout(d); err != nil {
		return err
	}
	if d.Chart.Source == "" || d.Chart.Name == "" || d.Chart.Version == "" {
		return badRequest("chart", "chart: source, name and version are required")
	}
	src, err := s.st.GetSource(ctx, d.Chart.Source)
	if errors.Is(err, store.ErrNotFound) {
		return errorf(http.StatusUnprocessableEntity, "chart.source", "chart.source: no chart source %q (GET /v1/sources lists them)", d.Chart.Source)
	} else if err != nil {
		return err
	}
	a, err := s.cat.Fetch(ctx, src, d.Chart.Name, d.Chart.Version)
	if err != nil {
		return errorf(http.StatusUnprocessableEntity, "chart", "chart %s %s in source %s: %v", d.Chart.Name, d.Chart.Version, src.Name, err)
	}
	if d.Chart.Digest != "" && d.Chart.Digest != a.Digest {
		return errorf(http.StatusConflict, "chart.digest", "chart %s %s from source %s: source serves %s, the request names %s", d.Chart.Name, d.Chart.Version, src.Name, a.Digest, d.Chart.Digest)
	}
	if err := catalog.ValidateValues(a.Chart, d.Values); err != nil {
		return errorf(http.StatusUnprocessableEntity, "values", "values: %v", err)
	}
	for i, c := range d.Customizations {
		if err := catalog.ValidateValues(a.Chart, d.Values, c.Values); err != nil {
			return errorf(http.StatusUnprocessableEntity, fmt.Sprintf("customizations[%d].values", i), "customizations[%d] (%s): values: %v", i, c.Name, err)
		}
	}
	ref := d.Chart
	ref.Digest = a.Digest
	if err := s.st.PinChart(ctx, ref); err != nil {
		return err
	}
	if err := s.st.PutBlob(ctx, a.Digest, a.Data); err != nil {
		return err
	}
	d.Chart.Digest = a.Digest
	return nil
}

// maxHealthDeadline bounds a health policy's deadline: a revision that
// has not become ready in a day is failed, not slow.
const maxHealthDeadline = 24 * time.Hour

// checkHealth validates d's health policy; an empty one ({}) is none.
func checkHealth(d *hubv1.Deployment) error {
	h := d.Health
	if h == nil {
		return nil
	}
	if *h == (hubv1.HealthPolicy{}) {
		d.Health = nil
		return nil
	}
	if h.Deadline != "" {
		dl, err := time.ParseDuration(h.Deadline)
		if err != nil || dl <= 0 || dl > maxHealthDeadline {
			return badRequest("health.deadline", "health.deadline: want a duration above 0 and at most 24h, such as 10m, got %q", h.Deadline)
		}
	}
	return nil
}

func validPlacement(p string) bool {
	return p == hubv1.PlaceVehicle || p == hubv1.PlaceCloud || p == hubv1.PlaceAuto
}

func (s *Server) createDeployment(w http.ResponseWriter, r *http.Request) error {
	var d hubv1.Deployment
	if err := decode(r, &d); err != nil {
		return err
	}
	if _, err := s.st.GetDeployment(r.Context(), d.Name); err == nil {
		return errorf(http.StatusConflict, "name", "deployment %s already exists (PUT /v1/deployments/%s changes it)", d.Name, d.Name)
	}
	if err := s.checkDeployment(r.Context(), &d); err != nil {
		return err
	}
	now := s.clk.Now().UTC()
	d.Generation, d.Created, d.Updated, d.CreatedBy = 1, now, now, principal(r.Context()).Actor()
	if err := s.st.CreateDeployment(r.Context(), d); err != nil {
		return err
	}
	s.audit(r, "create", "deployments/"+d.Name, fmt.Sprintf("chart %s/%s %s (%s), selector %q", d.Chart.Source, d.Chart.Name, d.Chart.Version, d.Chart.Digest, d.Selector))
	// The rollout runner releases it to the vehicles.
	s.kickRollouts()
	writeJSON(w, http.StatusCreated, d)
	return nil
}

// putDeployment replaces a deployment's spec. The body's generation must
// be the stored one (read, change, write back).
func (s *Server) putDeployment(w http.ResponseWriter, r *http.Request) error {
	var d hubv1.Deployment
	if err := decode(r, &d); err != nil {
		return err
	}
	name := r.PathValue("name")
	if d.Name == "" {
		d.Name = name
	}
	if d.Name != name {
		return badRequest("name", "name: the body says %q, the path %q", d.Name, name)
	}
	old, err := s.st.GetDeployment(r.Context(), name)
	if err != nil {
		return err
	}
	if d.Generation == 0 {
		return badRequest("generation", "generation: required (the generation you read, %d now)", old.Generation)
	}
	if d.Chart != old.Chart || d.Chart.Digest == "" {
		d.Chart.Digest = "" // a new version: resolve and pin it
	}
	if err := s.checkDeployment(r.Context(), &d); err != nil {
		return err
	}
	// CreatedBy names who made this generation (its version and rollout);
	// the deployment keeps its creator.
	d.Created, d.CreatedBy, d.Updated = old.Created, principal(r.Context()).Actor(), s.clk.Now().UTC()
	got, err := s.st.UpdateDeployment(r.Context(), d)
	if err != nil {
		return err
	}
	s.audit(r, "update", "deployments/"+name, fmt.Sprintf("generation %d: chart %s %s, selector %q", got.Generation, got.Chart.Name, got.Chart.Version, got.Selector))
	// The rollout runner releases the new generation to the vehicles.
	s.kickRollouts()
	writeJSON(w, http.StatusOK, got)
	return nil
}

func (s *Server) deleteDeployment(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	old, err := s.st.GetDeployment(r.Context(), name)
	if err != nil {
		return err
	}
	if err := s.st.DeleteDeployment(r.Context(), name); err != nil {
		return err
	}
	s.audit(r, "delete", "deployments/"+name, "")
	if err := s.dirtySelected(r.Context(), old.Selector, ""); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// dirtySelected queues every vehicle either selector matches.
func (s *Server) dirtySelected(ctx context.Context, sel1, sel2 string) error {
	var sels []labels.Selector
	for _, q := range []string{sel1, sel2} {
		if q == "" {
			continue
		}
		sel, err := labels.Parse(q)
		if err != nil {
			return err
		}
		sels = append(sels, sel)
	}
	if len(sels) == 0 {
		return nil
	}
	match := func(l map[string]string) bool {
		for _, sel := range sels {
			if sel.Matches(labels.Set(l)) {
				return true
			}
		}
		return false
	}
	p := store.Page{Limit: 1000}
	for {
		vs, next, err := s.st.ListVehicles(ctx, p, match)
		if err != nil {
			return err
		}
		ds := make([]store.Dirty, len(vs))
		for i, v := range vs {
			ds[i] = store.Dirty{ID: v.ID}
		}
		if err := s.markDirty(ctx, ds...); err != nil {
			return err
		}
		if next == "" {
			return nil
		}
		p.After = next
	}
}

func (s *Server) preview(w http.ResponseWriter, r *http.Request) error {
	var req hubv1.PreviewRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	v, err := s.st.GetVehicle(r.Context(), req.Vehicle)
	if errors.Is(err, store.ErrNotFound) {
		return errorf(http.StatusUnprocessableEntity, "vehicle", "vehicle: no vehicle %q", req.Vehicle)
	} else if err != nil {
		return err
	}
	d := req.Deployment
	d.Chart.Digest = ""
	if err := s.checkDeployment(r.Context(), &d); err != nil {
		return err
	}
	// The previewed deployment always applies to the chosen vehicle;
	// whether its selector matches is reported beside. The vehicle's other
	// deployments are at the generations their rollouts give it.
	sel, err := desired.ParseSelector(d.Selector) // empty selects nothing, as the issuer has it
	if err != nil {
		return badRequest("deployment.selector", "deployment.selector: %v", err)
	}
	matches := sel.Matches(labels.Set(v.Labels))
	ds, err := s.issuer.LoadDeployments(r.Context())
	if err != nil {
		return err
	}
	if err := ds.Put(d); err != nil {
		return badRequest("deployment", "%v", err)
	}
	plan, err := s.issuer.Compute(r.Context(), v, ds)
	if err != nil {
		return errorf(http.StatusUnprocessableEntity, "deployment", "%v", err)
	}
	out := hubv1.Preview{CloudNamespace: plan.Result.CloudNamespace, Placement: orEmpty(plan.Result.Placement), Matches: matches}
	if out.Vehicle, err = rawObjects(plan.Result.Vehicle); err != nil {
		return err
	}
	if out.Cloud, err = rawObjects(plan.Result.Cloud); err != nil {
		return err
	}
	if o := plan.Rendered[d.Name]; o != nil {
		out.Values, out.Notes = o.Values, o.Notes
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func rawObjects(objs []*unstructured.Unstructured) ([]json.RawMessage, error) {
	out := make([]json.RawMessage, 0, len(objs))
	for _, o := range objs {
		b, err := o.MarshalJSON()
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}
