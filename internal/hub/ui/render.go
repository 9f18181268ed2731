package ui

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"maps"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// page is what every template gets.
type page struct {
	Title string
	Nav   string   // the nav entry to mark current
	S     *session // nil on the login page
	// Live connects the page to /ui/events, so its live parts refresh.
	Live bool
	Now  time.Time
	Data any
}

// CSRF is the session's CSRF token, for forms.
func (s *session) CSRF() string { return s.csrf }

// pages are the parsed templates: each page file with the layout.
type pages struct {
	byName map[string]*template.Template
}

func parsePages() *pages {
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		panic(err)
	}
	p := &pages{byName: map[string]*template.Template{}}
	for _, n := range names {
		base := strings.TrimSuffix(path.Base(n), ".html")
		if base == "layout" {
			continue
		}
		t := template.New(base).Funcs(funcs)
		p.byName[base] = template.Must(t.ParseFS(templateFS, "templates/layout.html", n))
	}
	return p
}

var funcs = template.FuncMap{
	"ts": func(t any) string {
		switch v := t.(type) {
		case time.Time:
			if v.IsZero() {
				return "—"
			}
			return v.UTC().Format("2006-01-02 15:04:05Z")
		case *time.Time:
			if v == nil || v.IsZero() {
				return "—"
			}
			return v.UTC().Format("2006-01-02 15:04:05Z")
		}
		return ""
	},
	"iso": func(t *time.Time) string {
		if t == nil {
			return ""
		}
		return t.UTC().Format(time.RFC3339)
	},
	"ago": ago,
	"yaml": func(v any) string {
		b, err := yaml.Marshal(v)
		if err != nil {
			return fmt.Sprint(v)
		}
		return string(b)
	},
	"json": func(v any) string {
		var b []byte
		var err error
		if raw, ok := v.(json.RawMessage); ok {
			var buf bytes.Buffer
			if err = json.Indent(&buf, raw, "", "  "); err == nil {
				return buf.String()
			}
			return string(raw)
		}
		if b, err = json.MarshalIndent(v, "", "  "); err != nil {
			return fmt.Sprint(v)
		}
		return string(b)
	},
	"labels": func(m map[string]string) string {
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(m)) {
			parts = append(parts, k+"="+m[k])
		}
		return strings.Join(parts, ", ")
	},
	"resources": func(m map[string]string) string {
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(m)) {
			parts = append(parts, k+" "+m[k])
		}
		return strings.Join(parts, ", ")
	},
	"join":   strings.Join,
	"states": func() []string { return rolloutStates },
	"path":   url.PathEscape,
	"liveVersionAttr": func() template.HTMLAttr {
		return template.HTMLAttr(`hx-headers='{"` + LiveVersionHeader + `": "` + liveVersionSlot + `"}'`)
	},
	"lower": strings.ToLower,
	"list":  func(xs ...string) []string { return xs },
	"halfOf": func(hs []halfStatus, half string) *halfStatus {
		for i := range hs {
			if hs[i].Half == half {
				return &hs[i]
			}
		}
		return nil
	},
}

// ago is how long before now t was, in the largest unit that fits.
func ago(now time.Time, t *time.Time) string {
	if t == nil || t.IsZero() {
		return "never"
	}
	d := now.Sub(*t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

// A page's live part (the element htmx re-fetches on the /ui/events
// stream's "change" and "tick") sends the version of the page it came from
// in the LiveVersionHeader request header: the element carries
// {{liveVersionAttr}}, an hx-headers attribute naming that header. When the
// page rendered now has that same version, the answer is 204 No Content,
// which htmx does not swap. So a refresh that changes nothing replaces
// nothing: the reader's focus, a text selection, a click in progress (the
// press and release landing on two different buttons, and so no click) and
// screen readers, which would announce a role="status" banner again each
// time it was replaced.
//
// The version is a hash of the whole rendered page, with a fixed slot where
// the version goes: it changes exactly when some byte of the page does.
const (
	LiveVersionHeader = "Misaki-Live-Version"
	liveVersionSlot   = "live-version-slot-000000000000000"
)

// render writes the page template name with p (tmpl "layout": the whole
// page).
func (s *Server) render(w http.ResponseWriter, r *http.Request, code int, name string, p page) {
	s.renderPart(w, r, code, name, "layout", p)
}

// renderPart writes one template of page name's file: "layout" for the
// whole page, or a fragment htmx swaps in.
func (s *Server) renderPart(w http.ResponseWriter, r *http.Request, code int, name, tmpl string, p any) {
	if pp, ok := p.(page); ok && pp.Now.IsZero() {
		pp.Now = s.opts.Clock.Now()
		p = pp
	}
	t := s.pages.byName[name]
	var buf bytes.Buffer
	if t == nil {
		s.log.Error("no template", "page", name)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	if err := t.ExecuteTemplate(&buf, tmpl, p); err != nil {
		s.log.Error("render", "page", name, "template", tmpl, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	out := buf.Bytes()
	w.Header().Set("Cache-Control", "no-store")
	if bytes.Contains(out, []byte(liveVersionSlot)) {
		sum := sha256.Sum256(out)
		v := hex.EncodeToString(sum[:16])
		if code == http.StatusOK && r.Header.Get("HX-Request") != "" && r.Header.Get(LiveVersionHeader) == v {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		out = bytes.ReplaceAll(out, []byte(liveVersionSlot), []byte(v))
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	w.Write(out)
}

type errorData struct {
	Status  int
	Message string
}

// errorPage shows err: the API's message and status, or, for anything
// else, a generic one (logged).
func (s *Server) errorPage(w http.ResponseWriter, r *http.Request, ss *session, err error) {
	code, msg := status(err), err.Error()
	if code == http.StatusInternalServerError {
		if _, ok := err.(*apiError); !ok {
			s.log.Error("page failed", "path", r.URL.Path, "err", err)
			msg = "internal error"
		}
	}
	s.render(w, r, code, "error", page{Title: http.StatusText(code), S: ss, Data: errorData{Status: code, Message: msg}})
}
