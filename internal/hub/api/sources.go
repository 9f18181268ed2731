package api

import (
	"errors"
	"net/http"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/store"
)

func (s *Server) listSources(w http.ResponseWriter, r *http.Request) error {
	srcs, err := s.st.ListSources(r.Context())
	if err != nil {
		return err
	}
	writeRead(w, r, hubv1.List[hubv1.ChartSource]{Items: orEmpty(srcs)})
	return nil
}

func (s *Server) getSource(w http.ResponseWriter, r *http.Request) error {
	src, err := s.st.GetSource(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeRead(w, r, src)
	return nil
}

func (s *Server) createSource(w http.ResponseWriter, r *http.Request) error {
	var src hubv1.ChartSource
	if err := decode(r, &src); err != nil {
		return err
	}
	if errs := validation.IsDNS1123Label(src.Name); len(errs) > 0 {
		return badRequest("name", "name: %q: %s", src.Name, strings.Join(errs, "; "))
	}
	if _, err := s.st.GetSource(r.Context(), src.Name); err == nil {
		return errorf(http.StatusConflict, "name", "chart source %s already exists", src.Name)
	}
	// Check reaches the source: a typo is caught now, not at deploy time.
	if err := s.cat.Check(r.Context(), src); err != nil {
		return errorf(http.StatusUnprocessableEntity, "url", "chart source %s: %v", src.Name, err)
	}
	src.Created = s.clk.Now().UTC()
	if err := s.st.CreateSource(r.Context(), src); err != nil {
		return err
	}
	s.audit(r, "create", "sources/"+src.Name, src.Type+" "+src.URL)
	writeJSON(w, http.StatusCreated, src)
	return nil
}

func (s *Server) deleteSource(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	ds, err := s.allDeployments(r)
	if err != nil {
		return err
	}
	for _, d := range ds {
		if d.Chart.Source == name {
			return errorf(http.StatusConflict, "name", "chart source %s is used by deployment %s", name, d.Name)
		}
	}
	if err := s.st.DeleteSource(r.Context(), name); err != nil {
		return err
	}
	s.audit(r, "delete", "sources/"+name, "")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// listCharts lists the charts of every source, or of ?source=. Versions a
// deployment pinned say so, with the pinned digest.
func (s *Server) listCharts(w http.ResponseWriter, r *http.Request) error {
	var srcs []hubv1.ChartSource
	if name := r.URL.Query().Get("source"); name != "" {
		src, err := s.st.GetSource(r.Context(), name)
		if err != nil {
			return err
		}
		srcs = []hubv1.ChartSource{src}
	} else {
		var err error
		if srcs, err = s.st.ListSources(r.Context()); err != nil {
			return err
		}
	}
	out := []hubv1.Chart{}
	for _, src := range srcs {
		charts, err := s.cat.List(r.Context(), src)
		if err != nil {
			return errorf(http.StatusBadGateway, "source", "chart source %s: %v", src.Name, err)
		}
		for _, c := range charts {
			for i, v := range c.Versions {
				pin, err := s.st.GetPin(r.Context(), src.Name, c.Name, v.Version)
				if err == nil {
					c.Versions[i].Pinned, c.Versions[i].Digest = true, pin
				} else if !errors.Is(err, store.ErrNotFound) {
					return err
				}
			}
			out = append(out, c)
		}
	}
	writeRead(w, r, hubv1.List[hubv1.Chart]{Items: out})
	return nil
}

// getChartVersion fetches one version: digest, pinning and values schema.
func (s *Server) getChartVersion(w http.ResponseWriter, r *http.Request) error {
	src, err := s.st.GetSource(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	name, version := r.PathValue("chart"), r.PathValue("version")
	a, err := s.cat.Fetch(r.Context(), src, name, version)
	if err != nil {
		return errorf(http.StatusNotFound, "chart", "chart %s %s in source %s: %v", name, version, src.Name, err)
	}
	cv := hubv1.ChartVersion{
		Source: src.Name, Name: name, Version: version, Digest: a.Digest, ValuesSchema: a.ValuesSchema,
	}
	if a.Chart != nil && a.Chart.Metadata != nil {
		cv.AppVersion, cv.Description = a.Chart.Metadata.AppVersion, a.Chart.Metadata.Description
	}
	if pin, err := s.st.GetPin(r.Context(), src.Name, name, version); err == nil {
		cv.Pinned = true
		if pin != a.Digest {
			return errorf(http.StatusConflict, "version", "chart %s %s from source %s: source now serves %s, pinned %s", name, version, src.Name, a.Digest, pin)
		}
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	writeRead(w, r, cv)
	return nil
}
