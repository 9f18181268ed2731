package ui

import (
	"net/http"
	"net/url"
	"strconv"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

// rolloutStates are the vehicle states of a rollout, in the order the
// pages show them.
var rolloutStates = []string{
	hubv1.VehiclePending, hubv1.VehicleOffline, hubv1.VehicleApplying, hubv1.VehicleWaiting,
	hubv1.VehicleHealthy, hubv1.VehicleFailed, hubv1.VehicleSuperseded,
}

// failedShown is how many failed vehicles the rollout page lists.
const failedShown = 50

type deploymentsData struct {
	Items []deploymentRow
	// RolloutsError is why the active rollouts could not be read.
	RolloutsError string
	Next, First   string
}

type deploymentRow struct {
	D       hubv1.Deployment
	Rollout *hubv1.Rollout // the newest active one
}

// deployments is GET /v1/deployments beside GET /v1/rollouts?active=true.
func (s *Server) deployments(w http.ResponseWriter, r *http.Request, ss *session) error {
	q := url.Values{"limit": {"100"}}
	var d deploymentsData
	if after := r.URL.Query().Get("after"); after != "" {
		q.Set("after", after)
		d.First = "/ui/deployments"
	}
	var list hubv1.List[hubv1.Deployment]
	if err := s.api.call(r.Context(), ss.Token, "GET", "/v1/deployments", q, nil, &list); err != nil {
		return err
	}
	if list.Next != "" {
		d.Next = "/ui/deployments?after=" + url.QueryEscape(list.Next)
	}
	var active hubv1.List[hubv1.Rollout]
	if err := s.api.call(r.Context(), ss.Token, "GET", "/v1/rollouts", url.Values{"active": {"true"}}, nil, &active); err != nil {
		if status(err) == http.StatusUnauthorized {
			return err
		}
		d.RolloutsError = err.Error()
	}
	newest := map[string]*hubv1.Rollout{}
	for i := range active.Items {
		ro := &active.Items[i]
		if newest[ro.Deployment] == nil {
			newest[ro.Deployment] = ro
		}
	}
	for _, dep := range list.Items {
		d.Items = append(d.Items, deploymentRow{D: dep, Rollout: newest[dep.Name]})
	}
	s.render(w, r, http.StatusOK, "deployments", page{Title: "Deployments", Nav: "deployments", S: ss, Live: true, Data: d})
	return nil
}

type deploymentData struct {
	D             hubv1.Deployment
	Rollouts      []hubv1.Rollout
	RolloutsError string
	Versions      []hubv1.Deployment
	VersionsError string
	Self          string
}

// deployment is one deployment: its spec, its rollouts and its
// generations (with a rollback to each, for admins).
func (s *Server) deployment(w http.ResponseWriter, r *http.Request, ss *session) error {
	name := r.PathValue("name")
	base := "/v1/deployments/" + url.PathEscape(name)
	d := deploymentData{Self: "/ui/deployments/" + url.PathEscape(name)}
	if err := s.api.call(r.Context(), ss.Token, "GET", base, nil, nil, &d.D); err != nil {
		return err
	}
	var ros hubv1.List[hubv1.Rollout]
	if err := s.api.call(r.Context(), ss.Token, "GET", base+"/rollouts", nil, nil, &ros); err != nil {
		if status(err) == http.StatusUnauthorized {
			return err
		}
		d.RolloutsError = err.Error()
	}
	d.Rollouts = ros.Items
	var vs hubv1.List[hubv1.Deployment]
	if err := s.api.call(r.Context(), ss.Token, "GET", base+"/versions", nil, nil, &vs); err != nil {
		if status(err) == http.StatusUnauthorized {
			return err
		}
		d.VersionsError = err.Error()
	}
	d.Versions = vs.Items
	s.render(w, r, http.StatusOK, "deployment", page{Title: "Deployment " + name, Nav: "deployments", S: ss, Live: true, Data: d})
	return nil
}

// rollback is POST /v1/deployments/{name}/rollback to the posted
// generation.
func (s *Server) rollback(w http.ResponseWriter, r *http.Request, ss *session) error {
	name := r.PathValue("name")
	var req hubv1.RollbackRequest
	if g := r.PostFormValue("generation"); g != "" {
		n, err := strconv.ParseInt(g, 10, 64)
		if err != nil || n < 0 {
			return &apiError{Status: http.StatusBadRequest, Body: hubv1.Error{Code: http.StatusBadRequest, Field: "generation", Message: "generation: want a number"}}
		}
		req.Generation = n
	}
	var got hubv1.Deployment
	if err := s.api.call(r.Context(), ss.Token, "POST", "/v1/deployments/"+url.PathEscape(name)+"/rollback", nil, req, &got); err != nil {
		return err
	}
	http.Redirect(w, r, "/ui/deployments/"+url.PathEscape(name), http.StatusSeeOther)
	return nil
}

type rolloutsData struct {
	Items []hubv1.Rollout
}

// rollouts is GET /v1/rollouts?active=true.
func (s *Server) rollouts(w http.ResponseWriter, r *http.Request, ss *session) error {
	var list hubv1.List[hubv1.Rollout]
	if err := s.api.call(r.Context(), ss.Token, "GET", "/v1/rollouts", url.Values{"active": {"true"}}, nil, &list); err != nil {
		return err
	}
	s.render(w, r, http.StatusOK, "rollouts", page{Title: "Rollouts", Nav: "rollouts", S: ss, Live: true, Data: rolloutsData{Items: list.Items}})
	return nil
}

type rolloutData struct {
	R                    hubv1.Rollout
	Failed               []hubv1.RolloutVehicle
	MoreFailed           bool
	FailedError          string
	Self, Base           string
	Pause, Resume, Abort bool // the actions the phase allows
	Released, Answered   int
	Total                int
}

// rollout is one rollout: its waves with counts per state, the reason for
// a pause, the failed vehicles and the actions.
func (s *Server) rollout(w http.ResponseWriter, r *http.Request, ss *session) error {
	name, gen := r.PathValue("name"), r.PathValue("generation")
	api := "/v1/deployments/" + url.PathEscape(name) + "/rollouts/" + url.PathEscape(gen)
	d := rolloutData{Self: "/ui/deployments/" + url.PathEscape(name) + "/rollouts/" + url.PathEscape(gen)}
	d.Base = d.Self
	if err := s.api.call(r.Context(), ss.Token, "GET", api, nil, nil, &d.R); err != nil {
		return err
	}
	var failed hubv1.List[hubv1.RolloutVehicle]
	err := s.api.call(r.Context(), ss.Token, "GET", api+"/vehicles", url.Values{"state": {hubv1.VehicleFailed}, "limit": {strconv.Itoa(failedShown)}}, nil, &failed)
	if status(err) == http.StatusUnauthorized {
		return err
	} else if err != nil {
		d.FailedError = err.Error()
	}
	d.Failed, d.MoreFailed = failed.Items, failed.Next != ""
	switch d.R.Phase {
	case hubv1.RolloutProgressing:
		d.Pause, d.Abort = true, true
	case hubv1.RolloutPaused:
		d.Resume, d.Abort = true, true
	}
	for st, n := range d.R.Counts {
		d.Total += n
		switch st {
		case hubv1.VehicleHealthy, hubv1.VehicleFailed, hubv1.VehicleSuperseded:
			d.Answered += n
		}
		if st != hubv1.VehiclePending {
			d.Released += n
		}
	}
	s.render(w, r, http.StatusOK, "rollout", page{Title: "Rollout " + name + " " + gen, Nav: "rollouts", S: ss, Live: true, Data: d})
	return nil
}

// rolloutAction is POST .../rollouts/{generation}/{pause,resume,abort}.
func (s *Server) rolloutAction(w http.ResponseWriter, r *http.Request, ss *session) error {
	name, gen, action := r.PathValue("name"), r.PathValue("generation"), r.PathValue("action")
	switch action {
	case "pause", "resume", "abort":
	default:
		return &apiError{Status: http.StatusNotFound, Body: hubv1.Error{Code: http.StatusNotFound, Message: "no rollout action " + action}}
	}
	page := "/ui/deployments/" + url.PathEscape(name) + "/rollouts/" + url.PathEscape(gen)
	var got hubv1.Rollout
	err := s.api.call(r.Context(), ss.Token, "POST", "/v1/deployments/"+url.PathEscape(name)+"/rollouts/"+url.PathEscape(gen)+"/"+action, nil, hubv1.RolloutAction{Reason: r.PostFormValue("reason")}, &got)
	if err != nil {
		return err
	}
	http.Redirect(w, r, page, http.StatusSeeOther)
	return nil
}
