package ui

import (
	"net/http"
	"net/url"
	"strconv"
	"sync"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

// twinCalls bounds the twin reads the fleet page makes at once.
const twinCalls = 8

// maxPageSize bounds ?limit=: each row is a twin read.
const maxPageSize = 200

type fleetData struct {
	Selector, State string
	// SelectorError and StateError are the API's refusal of the filter.
	SelectorError, StateError string
	Rows                      []fleetRow
	Limit                     int
	After                     string
	// Self is this page's URL (the live table re-fetches it), Next the
	// next page's and First the first page's ("" when on it).
	Self, Next, First string
}

type fleetRow struct {
	V      hubv1.Vehicle
	Halves []halfStatus
	// OnVehicle and InCloud count the components by place.
	OnVehicle, InCloud int
	TwinError          string
}

// halfStatus is one half in a row: the desired and applied revisions and
// the phase.
type halfStatus struct {
	Half              string
	Desired, Applied  int64
	Phase             string
	Waiting           int64
	HasDesired, HasRe bool
}

func (s *Server) fleetURL(sel, state, after string, limit int) string {
	q := url.Values{}
	if sel != "" {
		q.Set("selector", sel)
	}
	if state != "" {
		q.Set("state", state)
	}
	if after != "" {
		q.Set("after", after)
	}
	if limit != s.opts.PageSize {
		q.Set("limit", strconv.Itoa(limit))
	}
	if len(q) == 0 {
		return "/ui/fleet"
	}
	return "/ui/fleet?" + q.Encode()
}

// fleet is the fleet page: one page of GET /v1/vehicles (filtered by
// label selector and state) and, for the rows shown, each vehicle's twin
// (revisions, phase, placement): the API has no list of twins.
func (s *Server) fleet(w http.ResponseWriter, r *http.Request, ss *session) error {
	q := r.URL.Query()
	d := fleetData{Selector: q.Get("selector"), State: q.Get("state"), After: q.Get("after"), Limit: s.opts.PageSize}
	if l, err := strconv.Atoi(q.Get("limit")); err == nil && l >= 1 && l <= maxPageSize {
		d.Limit = l
	}
	d.Self = s.fleetURL(d.Selector, d.State, d.After, d.Limit)
	aq := url.Values{"limit": {strconv.Itoa(d.Limit)}}
	if d.Selector != "" {
		aq.Set("selector", d.Selector)
	}
	if d.State != "" {
		aq.Set("state", d.State)
	}
	if d.After != "" {
		aq.Set("after", d.After)
		d.First = s.fleetURL(d.Selector, d.State, "", d.Limit)
	}
	var list hubv1.List[hubv1.Vehicle]
	err := s.api.call(r.Context(), ss.Token, "GET", "/v1/vehicles", aq, nil, &list)
	if e, ok := err.(*apiError); ok && e.Status == http.StatusBadRequest && (e.Body.Field == "selector" || e.Body.Field == "state") {
		if e.Body.Field == "selector" {
			d.SelectorError = e.Body.Message
		} else {
			d.StateError = e.Body.Message
		}
		s.render(w, r, http.StatusBadRequest, "fleet", page{Title: "Fleet", Nav: "fleet", S: ss, Data: d})
		return nil
	} else if err != nil {
		return err
	}
	if list.Next != "" {
		d.Next = s.fleetURL(d.Selector, d.State, list.Next, d.Limit)
	}
	d.Rows = make([]fleetRow, len(list.Items))
	var wg sync.WaitGroup
	sem := make(chan struct{}, twinCalls)
	for i, v := range list.Items {
		d.Rows[i].V = v
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			var tw hubv1.Twin
			if err := s.api.call(r.Context(), ss.Token, "GET", "/v1/vehicles/"+url.PathEscape(v.ID), nil, nil, &tw); err != nil {
				d.Rows[i].TwinError = err.Error()
				return
			}
			d.Rows[i].fill(tw)
		}()
	}
	wg.Wait()
	if err := r.Context().Err(); err != nil {
		return err
	}
	s.render(w, r, http.StatusOK, "fleet", page{Title: "Fleet", Nav: "fleet", S: ss, Live: true, Data: d})
	return nil
}

func (row *fleetRow) fill(tw hubv1.Twin) {
	row.V = tw.Vehicle
	row.Halves = halves(tw)
	for _, p := range tw.Placement {
		switch p.Place {
		case hubv1.PlaceVehicle:
			row.OnVehicle++
		case hubv1.PlaceCloud:
			row.InCloud++
		}
	}
}

// halves are the vehicle and cloud halves that have a desired revision or
// a report.
func halves(tw hubv1.Twin) []halfStatus {
	var out []halfStatus
	for _, half := range []string{hubv1.HalfVehicle, hubv1.HalfCloud} {
		h := halfStatus{Half: half}
		for _, d := range tw.Desired {
			if d.Half == half {
				h.Desired, h.HasDesired = d.Revision, true
			}
		}
		for _, rep := range tw.Reported {
			if rep.Half == half {
				h.Applied, h.Phase, h.Waiting, h.HasRe = rep.AppliedRevision, rep.Phase, rep.Waiting, true
			}
		}
		if h.HasDesired || h.HasRe {
			out = append(out, h)
		}
	}
	return out
}
