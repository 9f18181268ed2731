package ui

import (
	"net/http"
	"net/url"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

type vehicleData struct {
	Twin   hubv1.Twin
	Halves []halfView
	// OnVehicle and InCloud count the components by place.
	OnVehicle, InCloud int
	Self               string
}

// halfView is one half side by side: desired, reported, and the delta.
type halfView struct {
	Half     string
	Desired  *hubv1.DesiredSummary
	Reported *hubv1.Reported
	Delta    []hubv1.Delta
}

// vehicle is the vehicle page: GET /v1/vehicles/{id}, the twin.
func (s *Server) vehicle(w http.ResponseWriter, r *http.Request, ss *session) error {
	id := r.PathValue("id")
	var tw hubv1.Twin
	if err := s.api.call(r.Context(), ss.Token, "GET", "/v1/vehicles/"+url.PathEscape(id), nil, nil, &tw); err != nil {
		return err
	}
	d := vehicleData{Twin: tw, Self: "/ui/vehicles/" + url.PathEscape(id)}
	for _, half := range []string{hubv1.HalfVehicle, hubv1.HalfCloud} {
		h := halfView{Half: half}
		for i := range tw.Desired {
			if tw.Desired[i].Half == half {
				h.Desired = &tw.Desired[i]
			}
		}
		for i := range tw.Reported {
			if tw.Reported[i].Half == half {
				h.Reported = &tw.Reported[i]
			}
		}
		for _, dl := range tw.Delta {
			if dl.Half == half {
				h.Delta = append(h.Delta, dl)
			}
		}
		d.Halves = append(d.Halves, h)
	}
	for _, p := range tw.Placement {
		switch p.Place {
		case hubv1.PlaceVehicle:
			d.OnVehicle++
		case hubv1.PlaceCloud:
			d.InCloud++
		}
	}
	s.render(w, r, http.StatusOK, "vehicle", page{Title: "Vehicle " + id, Nav: "fleet", S: ss, Live: true, Data: d})
	return nil
}
