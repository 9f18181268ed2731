package ui

import (
	"net/http"
	"net/url"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

type catalogData struct {
	Sources []hubv1.ChartSource
	Charts  []hubv1.Chart
	// ChartsError is why the charts could not be listed (a source is
	// unreachable, say); the sources are still shown.
	ChartsError string
}

// catalog is the catalog page: GET /v1/sources and GET /v1/charts.
func (s *Server) catalog(w http.ResponseWriter, r *http.Request, ss *session) error {
	var d catalogData
	var srcs hubv1.List[hubv1.ChartSource]
	if err := s.api.call(r.Context(), ss.Token, "GET", "/v1/sources", nil, nil, &srcs); err != nil {
		return err
	}
	d.Sources = srcs.Items
	var charts hubv1.List[hubv1.Chart]
	if err := s.api.call(r.Context(), ss.Token, "GET", "/v1/charts", nil, nil, &charts); err != nil {
		if status(err) == http.StatusUnauthorized {
			return err
		}
		d.ChartsError = err.Error()
	}
	d.Charts = charts.Items
	s.render(w, r, http.StatusOK, "catalog", page{Title: "Catalog", Nav: "catalog", S: ss, Data: d})
	return nil
}

// chartVersion is one chart version: GET
// /v1/sources/{name}/charts/{chart}/versions/{version}, with its values
// schema.
func (s *Server) chartVersion(w http.ResponseWriter, r *http.Request, ss *session) error {
	cv, err := s.getChartVersion(r, ss, r.PathValue("source"), r.PathValue("chart"), r.PathValue("version"))
	if err != nil {
		return err
	}
	s.render(w, r, http.StatusOK, "chart", page{Title: "Chart " + cv.Name + " " + cv.Version, Nav: "catalog", S: ss, Data: cv})
	return nil
}

func (s *Server) getChartVersion(r *http.Request, ss *session, source, chart, version string) (hubv1.ChartVersion, error) {
	var cv hubv1.ChartVersion
	err := s.api.call(r.Context(), ss.Token, "GET", "/v1/sources/"+url.PathEscape(source)+"/charts/"+url.PathEscape(chart)+"/versions/"+url.PathEscape(version), nil, nil, &cv)
	return cv, err
}
