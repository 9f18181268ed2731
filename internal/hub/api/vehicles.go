package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/enrol"
	"github.com/misaki-io/misaki/internal/hub/store"
)

func (s *Server) listVehicles(w http.ResponseWriter, r *http.Request) error {
	items, next, err := s.vehiclePage(r)
	if err != nil {
		return err
	}
	writeRead(w, r, hubv1.List[hubv1.Vehicle]{Items: items, Next: next})
	return nil
}

// vehiclePage is the page of vehicles ?selector=, ?state=, ?limit= and
// ?after= ask for, with Online filled in.
func (s *Server) vehiclePage(r *http.Request) ([]hubv1.Vehicle, string, error) {
	p, err := page(r)
	if err != nil {
		return nil, "", err
	}
	var match func(map[string]string) bool
	if q := r.URL.Query().Get("selector"); q != "" {
		sel, err := labels.Parse(q)
		if err != nil {
			return nil, "", badRequest("selector", "selector: %v", err)
		}
		match = func(l map[string]string) bool { return sel.Matches(labels.Set(l)) }
	}
	state := r.URL.Query().Get("state")
	switch state {
	case "", "online", "offline":
	default:
		return nil, "", badRequest("state", "state: want online or offline, got %q", state)
	}
	if state != "" {
		now, window := s.clk.Now(), s.opts.OnlineWindow
		// Online depends on last seen, which the match func does not get;
		// filter after the read and keep paging until the page is full.
		return s.filterVehicles(r, p, match, func(v hubv1.Vehicle) bool {
			on := v.LastSeen != nil && now.Sub(*v.LastSeen) < window
			return on == (state == "online")
		})
	}
	items, next, err := s.st.ListVehicles(r.Context(), p, match)
	if err != nil {
		return nil, "", err
	}
	for i := range items {
		s.online(&items[i])
	}
	return orEmpty(items), next, nil
}

// listTwins is a page of vehicles with where each half stands: what a
// fleet view shows per row, in one call (the reports of the page in one
// store read).
func (s *Server) listTwins(w http.ResponseWriter, r *http.Request) error {
	vs, next, err := s.vehiclePage(r)
	if err != nil {
		return err
	}
	ids := make([]string, len(vs))
	for i, v := range vs {
		ids[i] = v.ID
	}
	reports, err := s.st.ListReported(r.Context(), ids)
	if err != nil {
		return err
	}
	out := make([]hubv1.TwinSummary, 0, len(vs))
	for _, v := range vs {
		t := hubv1.TwinSummary{Vehicle: v, Halves: []hubv1.HalfSummary{}}
		var placement []hubv1.ComponentPlacement
		for _, half := range []string{hubv1.HalfVehicle, hubv1.HalfCloud} {
			h := hubv1.HalfSummary{Half: half}
			var rep *hubv1.Reported
			for i, rp := range reports[v.ID] {
				if rp.Half == half {
					rep = &reports[v.ID][i]
					h.Reported, h.Applied, h.Phase, h.Waiting = true, rp.AppliedRevision, rp.Phase, rp.Waiting
				}
			}
			d, err := s.st.GetDesired(r.Context(), v.ID, half)
			switch {
			case err == nil:
				h.Desired = d.Revision
				t.Deltas += len(delta(half, d, rep))
				if half == hubv1.HalfVehicle || len(placement) == 0 {
					placement = d.Placement
				}
			case !errors.Is(err, store.ErrNotFound):
				return err
			}
			if h.Desired > 0 || h.Reported {
				t.Halves = append(t.Halves, h)
			}
		}
		for _, p := range placement {
			switch p.Place {
			case hubv1.PlaceVehicle:
				t.OnVehicle++
			case hubv1.PlaceCloud:
				t.InCloud++
			}
		}
		out = append(out, t)
	}
	writeRead(w, r, hubv1.List[hubv1.TwinSummary]{Items: out, Next: next})
	return nil
}

// filterVehicles pages through the store until it has p.Limit vehicles
// that keep accepts.
func (s *Server) filterVehicles(r *http.Request, p store.Page, match func(map[string]string) bool, keep func(hubv1.Vehicle) bool) ([]hubv1.Vehicle, string, error) {
	out := []hubv1.Vehicle{}
	for {
		items, next, err := s.st.ListVehicles(r.Context(), store.Page{After: p.After, Limit: p.Limit}, match)
		if err != nil {
			return nil, "", err
		}
		for i, v := range items {
			s.online(&v)
			if keep(v) {
				out = append(out, v)
				if len(out) == p.Limit {
					if i == len(items)-1 {
						return out, next, nil
					}
					return out, v.ID, nil
				}
			}
		}
		if next == "" {
			return out, "", nil
		}
		p.After = next
	}
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func validateVehicle(v *hubv1.Vehicle) error {
	if err := enrol.ValidVehicleID(v.ID); err != nil {
		return badRequest("id", "id: %v", err)
	}
	if err := validateLabels(v.Labels); err != nil {
		return err
	}
	for field, rl := range map[string]hubv1.ResourceList{"capacity": v.Capacity, "allocatable": v.Allocatable} {
		if err := validateResources(field, rl); err != nil {
			return err
		}
	}
	return nil
}

func validateLabels(l map[string]string) error {
	for k, v := range l {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return badRequest("labels", "labels: key %q: %s", k, errs[0])
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			return badRequest("labels", "labels: value %q of %q: %s", v, k, errs[0])
		}
	}
	return nil
}

func validateResources(field string, rl hubv1.ResourceList) error {
	for name, q := range rl {
		if _, err := resource.ParseQuantity(q); err != nil {
			return badRequest(field, "%s.%s: %q is not a quantity (examples: 4, 500m, 8Gi)", field, name, q)
		}
	}
	return nil
}

func (s *Server) createVehicle(w http.ResponseWriter, r *http.Request) error {
	var v hubv1.Vehicle
	if err := decode(r, &v); err != nil {
		return err
	}
	if err := validateVehicle(&v); err != nil {
		return err
	}
	v.Created = s.clk.Now().UTC()
	v.Enrolled, v.LastSeen, v.CertificateExpires = nil, nil, nil
	if err := s.st.CreateVehicle(r.Context(), v); err != nil {
		return err
	}
	s.audit(r, "create", "vehicles/"+v.ID, "")
	if err := s.markDirty(r.Context(), store.Dirty{ID: v.ID}); err != nil {
		return err
	}
	got, err := s.st.GetVehicle(r.Context(), v.ID)
	if err != nil {
		return err
	}
	s.online(&got)
	writeJSON(w, http.StatusCreated, got)
	return nil
}

func (s *Server) patchVehicle(w http.ResponseWriter, r *http.Request) error {
	var p hubv1.VehiclePatch
	if err := decode(r, &p); err != nil {
		return err
	}
	id := r.PathValue("id")
	for range 5 {
		v, err := s.st.GetVehicle(r.Context(), id)
		if err != nil {
			return err
		}
		if p.ResourceVersion != 0 && p.ResourceVersion != v.ResourceVersion {
			return fmt.Errorf("vehicle %s: resourceVersion %d: %w", id, p.ResourceVersion, store.ErrConflict)
		}
		if p.Labels != nil {
			v.Labels = p.Labels
		}
		if p.Capacity != nil {
			v.Capacity = p.Capacity
		}
		if p.Allocatable != nil {
			v.Allocatable = p.Allocatable
		}
		if err := validateVehicle(&v); err != nil {
			return err
		}
		got, err := s.st.UpdateVehicle(r.Context(), v)
		if errors.Is(err, store.ErrConflict) && p.ResourceVersion == 0 {
			continue // a report landed in between; apply the patch again
		}
		if err != nil {
			return err
		}
		s.audit(r, "update", "vehicles/"+id, "")
		if err := s.markDirty(r.Context(), store.Dirty{ID: id}); err != nil {
			return err
		}
		s.online(&got)
		writeJSON(w, http.StatusOK, got)
		return nil
	}
	return fmt.Errorf("vehicle %s: %w", id, store.ErrConflict)
}

func (s *Server) deleteVehicle(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if err := s.st.DeleteVehicle(r.Context(), id); err != nil {
		return err
	}
	s.audit(r, "delete", "vehicles/"+id, "")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request) error {
	var req hubv1.TokenRequest
	if r.ContentLength != 0 {
		if err := decode(r, &req); err != nil {
			return err
		}
	}
	ttl := s.opts.TokenTTL
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 || d > 30*24*time.Hour {
			return badRequest("ttl", "ttl: want a duration from 1s to 720h, got %q", req.TTL)
		}
		ttl = d
	}
	id := r.PathValue("id")
	if _, err := s.st.GetVehicle(r.Context(), id); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return errorf(http.StatusNotFound, "id", "vehicle %s does not exist: create it first (POST /v1/vehicles)", id)
		}
		return err
	}
	tid, secret, token, err := enrol.NewToken()
	if err != nil {
		return err
	}
	now := s.clk.Now().UTC()
	t := hubv1.BootstrapToken{ID: tid, VehicleID: id, Expires: now.Add(ttl), Created: now, CreatedBy: principal(r.Context()).Actor()}
	if err := s.st.CreateToken(r.Context(), t, enrol.HashSecret(secret)); err != nil {
		return err
	}
	s.audit(r, "create", "vehicles/"+id+"/tokens/"+tid, "expires "+t.Expires.Format(time.RFC3339))
	t.Token = token
	writeJSON(w, http.StatusCreated, t)
	return nil
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) error {
	ts, err := s.st.ListTokens(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeRead(w, r, hubv1.List[hubv1.BootstrapToken]{Items: orEmpty(ts)})
	return nil
}

// enrol spends a bootstrap token for a certificate.
func (s *Server) enrol(w http.ResponseWriter, r *http.Request) error {
	var req hubv1.EnrolRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	tid, secret, err := enrol.ParseToken(req.Token)
	if err != nil {
		return errorf(http.StatusUnauthorized, "token", "token: %v", err)
	}
	if req.CSR == "" {
		return badRequest("csr", "csr: a PEM certificate request is required")
	}
	now := s.clk.Now().UTC()
	// Check the CSR before spending the token, so a bad CSR does not
	// burn it.
	if err := enrol.CheckCSR([]byte(req.CSR)); err != nil {
		return badRequest("csr", "csr: %v", err)
	}
	id, err := s.st.UseToken(r.Context(), tid, enrol.HashSecret(secret), now)
	if err != nil {
		return err
	}
	// The request has no principal: the token speaks for the vehicle.
	r = r.WithContext(context.WithValue(r.Context(), principalKey{}, Principal{Vehicle: id, via: "bootstrap-token/" + tid}))
	return s.issueCertificate(w, r, id, []byte(req.CSR), "enrol")
}

func (s *Server) renewCertificate(w http.ResponseWriter, r *http.Request) error {
	var req hubv1.RenewRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if principal(r.Context()).Vehicle == "" {
		return errorf(http.StatusForbidden, "", "only the vehicle renews its certificate (use a bootstrap token to enrol it again)")
	}
	return s.issueCertificate(w, r, r.PathValue("id"), []byte(req.CSR), "renew")
}

func (s *Server) issueCertificate(w http.ResponseWriter, r *http.Request, id string, csr []byte, action string) error {
	now := s.clk.Now().UTC()
	cert, notAfter, err := s.ca.IssueVehicle(csr, id, now, s.opts.CertTTL)
	if err != nil {
		return badRequest("csr", "csr: %v", err)
	}
	if err := s.st.SetEnrolled(r.Context(), id, now, notAfter); err != nil {
		return err
	}
	s.audit(r, action, "vehicles/"+id, "certificate until "+notAfter.Format(time.RFC3339))
	writeJSON(w, http.StatusOK, hubv1.Certificate{Vehicle: id, Certificate: string(cert), CA: string(s.ca.CertPEM()), Expires: notAfter})
	return nil
}
