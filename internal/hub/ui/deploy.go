package ui

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

// deployForm is the new-deployment form as posted (and shown again with
// the errors when the API refuses it).
type deployForm struct {
	Name, Namespace, Chart, Values, Selector, DefaultPlacement string
	HealthDeadline                                             string
	Rollback                                                   bool
	Canary, Waves, MaxUnavailable, BakeTime, WaveDeadline      string
	FailureThreshold, Gates                                    string
	PreviewVehicle                                             string
}

func readDeployForm(r *http.Request) deployForm {
	v := func(k string) string { return strings.TrimSpace(r.PostFormValue(k)) }
	return deployForm{
		Name: v("name"), Namespace: v("namespace"), Chart: v("chart"), Values: r.PostFormValue("values"),
		Selector: v("selector"), DefaultPlacement: v("defaultPlacement"),
		HealthDeadline: v("healthDeadline"), Rollback: r.PostFormValue("rollback") != "",
		Canary: v("canary"), Waves: r.PostFormValue("waves"), MaxUnavailable: v("maxUnavailable"),
		BakeTime: v("bakeTime"), WaveDeadline: v("waveDeadline"), FailureThreshold: v("failureThreshold"),
		Gates: r.PostFormValue("gates"), PreviewVehicle: v("previewVehicle"),
	}
}

// formError is an input the UI could not turn into a deployment, named by
// its form field.
type formError struct{ field, msg string }

func (e *formError) Error() string { return e.msg }

// splitChart reads the chart choice "source/name/version".
func splitChart(s string) (hubv1.ChartRef, bool) {
	parts := strings.Split(s, "/")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return hubv1.ChartRef{}, false
	}
	return hubv1.ChartRef{Source: parts[0], Name: parts[1], Version: parts[2]}, true
}

var sizeRE = regexp.MustCompile(`^[0-9]+%?$`)

// parseWave reads one wave: an optional "name: " then a size ("10%", "5")
// or a label selector.
func parseWave(line string) hubv1.Wave {
	var w hubv1.Wave
	if name, rest, ok := strings.Cut(line, ": "); ok && !strings.ContainsAny(name, "=!, ()") {
		w.Name, line = strings.TrimSpace(name), strings.TrimSpace(rest)
	}
	if sizeRE.MatchString(line) {
		w.Size = line
	} else {
		w.Selector = line
	}
	return w
}

func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

// deployment turns the form into the API's Deployment.
func (f deployForm) deployment() (hubv1.Deployment, error) {
	d := hubv1.Deployment{Name: f.Name, Namespace: f.Namespace, Selector: f.Selector, DefaultPlacement: f.DefaultPlacement}
	ref, ok := splitChart(f.Chart)
	if !ok {
		return d, &formError{"chart", "chart: choose a chart version"}
	}
	d.Chart = ref
	if strings.TrimSpace(f.Values) != "" {
		var vals map[string]any
		if err := yaml.Unmarshal([]byte(f.Values), &vals); err != nil {
			return d, &formError{"values", "values: not a YAML or JSON object: " + err.Error()}
		}
		d.Values = vals
	}
	if f.HealthDeadline != "" || f.Rollback {
		d.Health = &hubv1.HealthPolicy{Deadline: f.HealthDeadline, Rollback: f.Rollback}
	}
	p := hubv1.RolloutPolicy{MaxUnavailable: f.MaxUnavailable, BakeTime: f.BakeTime, WaveDeadline: f.WaveDeadline, FailureThreshold: f.FailureThreshold}
	if f.Canary != "" {
		w := parseWave(f.Canary)
		if w.Name == "" {
			w.Name = "canary"
		}
		p.Canary = &w
	}
	for _, l := range lines(f.Waves) {
		p.Waves = append(p.Waves, parseWave(l))
	}
	p.Gates = lines(f.Gates)
	if p.Canary != nil || len(p.Waves) > 0 || len(p.Gates) > 0 || p.MaxUnavailable != "" || p.BakeTime != "" || p.WaveDeadline != "" || p.FailureThreshold != "" {
		d.Rollout = &p
	}
	return d, nil
}

// formField maps the field an API error names to the form's input.
func formField(apiField string) string {
	f := strings.TrimPrefix(apiField, "deployment.")
	switch {
	case f == "":
		return ""
	case f == "name", f == "namespace", f == "selector", f == "values", f == "defaultPlacement", f == "vehicle":
		if f == "vehicle" {
			return "previewVehicle"
		}
		return f
	case strings.HasPrefix(f, "chart"), f == "version":
		return "chart"
	case strings.HasPrefix(f, "health"):
		return "healthDeadline"
	case strings.HasPrefix(f, "rollout.canary"):
		return "canary"
	case strings.HasPrefix(f, "rollout.waves"):
		return "waves"
	case strings.HasPrefix(f, "rollout.gates"):
		return "gates"
	case strings.HasPrefix(f, "rollout."):
		switch name := strings.TrimPrefix(f, "rollout."); name {
		case "maxUnavailable", "bakeTime", "waveDeadline", "failureThreshold":
			return name
		}
		return "rollout"
	case f == "rollout":
		return "rollout"
	case strings.HasPrefix(f, "customizations"):
		return "values"
	}
	return ""
}

type deployData struct {
	Form   deployForm
	Charts []chartChoice
	// ChartsError is why the charts could not be listed.
	ChartsError string
	// Errors by form field; "" is the form's.
	Errors  map[string]string
	Schema  *hubv1.ChartVersion
	Preview *previewData
	Count   *countData
}

type chartChoice struct {
	Value, Label string
}

type previewData struct {
	Vehicle string
	Preview hubv1.Preview
	Error   string
	// Vehicle and cloud manifests as YAML.
	VehicleYAML, CloudYAML string
}

type countData struct {
	Selector string
	N        int
	More     bool // at least N
	IDs      []string
	Error    string
}

// countCap is where the live count stops counting: "≥ 1000".
const countCap = 1000

func (s *Server) newDeployment(w http.ResponseWriter, r *http.Request, ss *session) error {
	return s.renderDeploy(w, r, ss, http.StatusOK, deployData{Form: deployForm{Chart: r.URL.Query().Get("chart")}})
}

// renderDeploy shows the form with d's errors and preview, filling in the
// chart list, the schema and the selector's count.
func (s *Server) renderDeploy(w http.ResponseWriter, r *http.Request, ss *session, code int, d deployData) error {
	var charts hubv1.List[hubv1.Chart]
	if err := s.api.call(r.Context(), ss.Token, "GET", "/v1/charts", nil, nil, &charts); status(err) == http.StatusUnauthorized {
		return err
	} else if err != nil {
		d.ChartsError = err.Error()
	}
	for _, c := range charts.Items {
		for _, v := range c.Versions {
			label := fmt.Sprintf("%s / %s %s", c.Source, c.Name, v.Version)
			if v.AppVersion != "" {
				label += " (app " + v.AppVersion + ")"
			}
			d.Charts = append(d.Charts, chartChoice{Value: c.Source + "/" + c.Name + "/" + v.Version, Label: label})
		}
	}
	if ref, ok := splitChart(d.Form.Chart); ok && d.Schema == nil {
		if cv, err := s.getChartVersion(r, ss, ref.Source, ref.Name, ref.Version); err == nil {
			d.Schema = &cv
		}
	}
	if d.Count == nil {
		c, err := s.count(r, ss, d.Form.Selector)
		if err != nil {
			return err
		}
		d.Count = &c
	}
	s.render(w, r, code, "deploy", page{Title: "New deployment", Nav: "new", S: ss, Data: d})
	return nil
}

// schemaFragment is the chosen chart version's schema (htmx, on change).
func (s *Server) schemaFragment(w http.ResponseWriter, r *http.Request, ss *session) error {
	var cv *hubv1.ChartVersion
	if ref, ok := splitChart(r.URL.Query().Get("chart")); ok {
		got, err := s.getChartVersion(r, ss, ref.Source, ref.Name, ref.Version)
		if status(err) == http.StatusUnauthorized {
			return err
		}
		if err == nil {
			cv = &got
		}
	}
	s.renderPart(w, r, http.StatusOK, "deploy", "schema", cv)
	return nil
}

// selectorCount is the live count of the vehicles a selector matches
// (htmx, as the operator types).
func (s *Server) selectorCount(w http.ResponseWriter, r *http.Request, ss *session) error {
	c, err := s.count(r, ss, strings.TrimSpace(r.URL.Query().Get("selector")))
	if err != nil {
		return err
	}
	s.renderPart(w, r, http.StatusOK, "deploy", "count", c)
	return nil
}

// count counts the vehicles sel matches, one page of GET /v1/vehicles up
// to countCap. The API's refusal of the selector is in the answer; the
// error is for a session that ended.
func (s *Server) count(r *http.Request, ss *session, sel string) (countData, error) {
	c := countData{Selector: sel}
	if sel == "" {
		return c, nil
	}
	var list hubv1.List[hubv1.Vehicle]
	err := s.api.call(r.Context(), ss.Token, "GET", "/v1/vehicles", url.Values{"selector": {sel}, "limit": {strconv.Itoa(countCap)}}, nil, &list)
	if status(err) == http.StatusUnauthorized {
		return c, err
	}
	if err != nil {
		c.Error = err.Error()
		return c, nil
	}
	c.N, c.More = len(list.Items), list.Next != ""
	for i, v := range list.Items {
		if i == 20 {
			break
		}
		c.IDs = append(c.IDs, v.ID)
	}
	return c, nil
}

// preview is POST /ui/deployments/preview: the form's deployment rendered
// and placed for one vehicle (POST /v1/preview). htmx swaps in the
// result; without JavaScript the whole form comes back with it.
func (s *Server) preview(w http.ResponseWriter, r *http.Request, ss *session) error {
	f := readDeployForm(r)
	pd := &previewData{Vehicle: f.PreviewVehicle}
	d := deployData{Form: f, Errors: map[string]string{}, Preview: pd}
	dep, err := f.deployment()
	if fe, ok := err.(*formError); ok {
		pd.Error = fe.msg
		d.Errors[fe.field] = fe.msg
	} else if f.PreviewVehicle == "" {
		pd.Error = "Choose a vehicle to preview the deployment for."
		d.Errors["previewVehicle"] = pd.Error
	} else {
		if dep.Name == "" {
			dep.Name = "preview"
		}
		err := s.api.call(r.Context(), ss.Token, "POST", "/v1/preview", nil, hubv1.PreviewRequest{Deployment: dep, Vehicle: f.PreviewVehicle}, &pd.Preview)
		if status(err) == http.StatusUnauthorized {
			return err
		}
		if err != nil {
			pd.Error = err.Error()
			if e, ok := err.(*apiError); ok {
				d.Errors[formField(e.Body.Field)] = e.Body.Message
			}
		} else {
			pd.VehicleYAML, pd.CloudYAML = manifests(pd.Preview.Vehicle), manifests(pd.Preview.Cloud)
		}
	}
	if r.Header.Get("HX-Request") != "" {
		s.renderPart(w, r, http.StatusOK, "deploy", "preview", pd)
		return nil
	}
	return s.renderDeploy(w, r, ss, http.StatusOK, d)
}

// manifests are objects as one multi-document YAML.
func manifests(objs []json.RawMessage) string {
	var b strings.Builder
	for _, o := range objs {
		y, err := yaml.JSONToYAML(o)
		if err != nil {
			y = o
		}
		b.WriteString("---\n")
		b.Write(y)
	}
	return b.String()
}

// createDeployment is POST /ui/deployments: POST /v1/deployments, then the
// deployment's page; a refusal shows the form again with the API's error
// beside the field it names.
func (s *Server) createDeployment(w http.ResponseWriter, r *http.Request, ss *session) error {
	f := readDeployForm(r)
	d := deployData{Form: f, Errors: map[string]string{}}
	dep, err := f.deployment()
	if err == nil {
		var got hubv1.Deployment
		err = s.api.call(r.Context(), ss.Token, "POST", "/v1/deployments", nil, dep, &got)
		if err == nil {
			http.Redirect(w, r, "/ui/deployments/"+url.PathEscape(got.Name), http.StatusSeeOther)
			return nil
		}
	}
	code := http.StatusUnprocessableEntity
	switch e := err.(type) {
	case *formError:
		d.Errors[e.field] = e.msg
	case *apiError:
		if e.Status == http.StatusUnauthorized {
			return err
		}
		code = e.Status
		d.Errors[formField(e.Body.Field)] = e.Body.Message
	default:
		return err
	}
	return s.renderDeploy(w, r, ss, code, d)
}
