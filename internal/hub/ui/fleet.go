package ui

import (
	"net/http"
	"net/url"
	"strconv"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

// maxPageSize bounds ?limit=.
const maxPageSize = 500

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

// fleet is the fleet page: one page of GET /v1/twins (filtered by label
// selector and state): each vehicle with its halves' revisions and phase
// and its components by place.
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
	var list hubv1.List[hubv1.TwinSummary]
	err := s.api.call(r.Context(), ss.Token, "GET", "/v1/twins", aq, nil, &list)
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
	for i, t := range list.Items {
		row := fleetRow{V: t.Vehicle, OnVehicle: t.OnVehicle, InCloud: t.InCloud}
		for _, h := range t.Halves {
			row.Halves = append(row.Halves, halfStatus{Half: h.Half, Desired: h.Desired, Applied: h.Applied, Phase: h.Phase, Waiting: h.Waiting,
				HasDesired: h.Desired > 0, HasRe: h.Reported})
		}
		d.Rows[i] = row
	}
	s.render(w, r, http.StatusOK, "fleet", page{Title: "Fleet", Nav: "fleet", S: ss, Live: true, Data: d})
	return nil
}
