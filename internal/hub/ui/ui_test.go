package ui_test

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub"
	"github.com/misaki-io/misaki/internal/hub/hubtest"
	"github.com/misaki-io/misaki/internal/hub/ui"
)

// browserish is a client that keeps cookies and does not follow
// redirects, as a test of what a browser without JavaScript sees.
type browserish struct {
	t    *testing.T
	h    *hubtest.Hub
	c    *http.Client
	base string
}

func newBrowserish(t *testing.T, h *hubtest.Hub) *browserish {
	jar, _ := cookiejar.New(nil)
	c := h.Client()
	c.Jar = jar
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &browserish{t: t, h: h, c: c, base: h.URL}
}

func (b *browserish) do(method, path string, form url.Values, hdr map[string]string) (*http.Response, string) {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.base+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", b.base)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp, string(out)
}

var hiddenRE = regexp.MustCompile(`name="(login_csrf|csrf)" value="([^"]+)"`)

func hidden(t *testing.T, page, name string) string {
	t.Helper()
	for _, m := range hiddenRE.FindAllStringSubmatch(page, -1) {
		if m[1] == name {
			return m[2]
		}
	}
	t.Fatalf("no hidden field %s in the page", name)
	return ""
}

// login logs in with token and returns the session's CSRF token.
func (b *browserish) login(token string) string {
	b.t.Helper()
	_, page := b.do("GET", "/ui/login", nil, nil)
	resp, body := b.do("POST", "/ui/login", url.Values{"login_csrf": {hidden(b.t, page, "login_csrf")}, "token": {token}, "next": {"/ui/fleet"}}, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/fleet" {
		b.t.Fatalf("login: %d %s: %s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	_, page = b.do("GET", "/ui/fleet", nil, nil)
	return hidden(b.t, page, "csrf")
}

// Without JavaScript: the login, the session cookie's attributes, the
// headers, CSRF and origin checks, pages that read fully, a read-only
// token refused by the API, and a session that works on a second hub
// sharing the data dir (as a restarted hub or a replica would).
func TestSession(t *testing.T) {
	h := hubtest.Start(t, hub.Config{})
	register(t, h, "car", 3, map[string]string{"fleet": "eu"})
	var ro hubv1.OperatorToken
	h.Admin(t, http.StatusCreated, "POST", "/v1/operator-tokens", hubv1.OperatorToken{Name: "viewer", Scope: "read"}, &ro)
	var cloud hubv1.OperatorToken
	h.Admin(t, http.StatusCreated, "POST", "/v1/operator-tokens", hubv1.OperatorToken{Name: "cloud", Scope: "cloud-agent"}, &cloud)
	b := newBrowserish(t, h)

	resp, _ := b.do("GET", "/", nil, nil)
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/ui/" {
		t.Errorf("GET /: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, _ = b.do("GET", "/ui/vehicles/car-001", nil, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/login?next=%2Fui%2Fvehicles%2Fcar-001" {
		t.Errorf("a page without a session: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, page := b.do("GET", "/ui/login", nil, nil)
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP: %q", csp)
	}
	if !strings.Contains(page, `<label for="token">`) {
		t.Errorf("the token input has no label")
	}

	t.Run("login refusals", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			form  url.Values
			code  int
			says  string
			hdr   map[string]string
			fresh bool
		}{
			{name: "no login token", form: url.Values{"token": {h.Token}}, code: 403, says: "expired"},
			{name: "from another site", form: url.Values{"token": {h.Token}}, code: 403, says: "expired", hdr: map[string]string{"Origin": "https://evil.example"}, fresh: true},
			{name: "unknown token", form: url.Values{"token": {"mkh_nope"}}, code: 401, says: "does not know", fresh: true},
			{name: "cloud-agent token", form: url.Values{"token": {cloud.Token}}, code: 403, says: "read or admin", fresh: true},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if tc.fresh {
					_, page := b.do("GET", "/ui/login", nil, nil)
					tc.form.Set("login_csrf", hidden(t, page, "login_csrf"))
				}
				resp, body := b.do("POST", "/ui/login", tc.form, tc.hdr)
				if resp.StatusCode != tc.code || !strings.Contains(body, tc.says) {
					t.Errorf("%d, want %d saying %q", resp.StatusCode, tc.code, tc.says)
				}
			})
		}
	})

	csrf := b.login(h.Token)
	u, _ := url.Parse(h.URL + "/ui/")
	var sess *http.Cookie
	for _, c := range b.c.Jar.Cookies(u) {
		if c.Name == "misaki_session" {
			sess = c
		}
	}
	// The jar keeps only name and value; the attributes are on the
	// login answer.
	fresh := newBrowserish(t, h)
	_, page = fresh.do("GET", "/ui/login", nil, nil)
	resp, _ = fresh.do("POST", "/ui/login", url.Values{"login_csrf": {hidden(t, page, "login_csrf")}, "token": {h.Token}}, nil)
	var set *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "misaki_session" {
			set = c
		}
	}
	if set == nil || !set.HttpOnly || !set.Secure || set.SameSite != http.SameSiteStrictMode || set.Path != "/ui/" || strings.Contains(set.Value, h.Token) {
		t.Fatalf("session cookie: %+v", set)
	}

	t.Run("pages read without JavaScript", func(t *testing.T) {
		for path, want := range map[string]string{
			"/ui/fleet":              `<a href="/ui/vehicles/car-002">car-002</a>`,
			"/ui/fleet?state=online": "No vehicles match",
			"/ui/vehicles/car-003":   "Vehicle car-003",
			"/ui/catalog":            "No chart sources",
			"/ui/deployments":        "No deployments yet",
			"/ui/deployments/new":    `id="create-button"`,
			"/ui/rollouts":           "Active rollouts",
		} {
			resp, body := b.do("GET", path, nil, nil)
			if resp.StatusCode != http.StatusOK || !strings.Contains(body, want) {
				t.Errorf("GET %s: %d, want 200 with %q", path, resp.StatusCode, want)
			}
		}
		resp, body := b.do("GET", "/ui/vehicles/car-404", nil, nil)
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "car-404") {
			t.Errorf("an unknown vehicle: %d", resp.StatusCode)
		}
	})

	t.Run("CSRF", func(t *testing.T) {
		form := url.Values{"name": {"x"}, "chart": {"a/b/1"}}
		if resp, _ := b.do("POST", "/ui/deployments", form, nil); resp.StatusCode != http.StatusForbidden {
			t.Errorf("no CSRF token: %d", resp.StatusCode)
		}
		form.Set("csrf", csrf+"x")
		if resp, _ := b.do("POST", "/ui/deployments", form, nil); resp.StatusCode != http.StatusForbidden {
			t.Errorf("a wrong CSRF token: %d", resp.StatusCode)
		}
		form.Set("csrf", csrf)
		if resp, _ := b.do("POST", "/ui/deployments", form, map[string]string{"Origin": "https://evil.example"}); resp.StatusCode != http.StatusForbidden {
			t.Errorf("from another origin: %d", resp.StatusCode)
		}
		// With the token the API answers: the source does not exist.
		resp, body := b.do("POST", "/ui/deployments", form, nil)
		if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(body, `id="chart-error"`) {
			t.Errorf("with the token: %d", resp.StatusCode)
		}
		// htmx sends it as a header.
		resp, _ = b.do("POST", "/ui/deployments/preview", url.Values{"chart": {"a/b/1"}}, map[string]string{"X-CSRF-Token": csrf, "HX-Request": "true"})
		if resp.StatusCode != http.StatusOK {
			t.Errorf("preview with the header: %d", resp.StatusCode)
		}
	})

	t.Run("tampered cookie", func(t *testing.T) {
		c := *sess
		c.Value = c.Value[:len(c.Value)-2] + "AA"
		jar, _ := cookiejar.New(nil)
		jar.SetCookies(u, []*http.Cookie{&c})
		b2 := newBrowserish(t, h)
		b2.c.Jar = jar
		if resp, _ := b2.do("GET", "/ui/fleet", nil, nil); resp.StatusCode != http.StatusSeeOther {
			t.Errorf("a tampered session: %d", resp.StatusCode)
		}
	})

	t.Run("read-only", func(t *testing.T) {
		r := newBrowserish(t, h)
		rcsrf := r.login(ro.Token)
		_, body := r.do("GET", "/ui/deployments/new", nil, nil)
		if strings.Contains(body, `id="create-button"`) || !strings.Contains(body, "read-only token") {
			t.Errorf("a read-only session sees the create button")
		}
		if !strings.Contains(body, `id="token-name">viewer<`) {
			t.Errorf("the header does not name the token (GET /v1/whoami)")
		}
		// Posting anyway: the API refuses it, the UI holds no privilege.
		resp, body := r.do("POST", "/ui/deployments", url.Values{"csrf": {rcsrf}, "name": {"x"}, "chart": {"a/b/1"}}, nil)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "read-only") {
			t.Errorf("a read-only create: %d", resp.StatusCode)
		}
	})

	t.Run("events", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", h.URL+"/ui/events", nil)
		resp, err := b.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		rd := bufio.NewReader(resp.Body)
		if line, err := rd.ReadString('\n'); err != nil || !strings.HasPrefix(line, "retry:") {
			t.Fatalf("first line %q, %v", line, err)
		}
		// An API write (a new vehicle) is a change.
		h.Admin(t, http.StatusCreated, "POST", "/v1/vehicles", hubv1.Vehicle{ID: "car-new"}, nil)
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				t.Fatalf("no change event: %v", err)
			}
			if line == "event: change\n" {
				break
			}
		}
	})

	t.Run("another replica", func(t *testing.T) {
		h2 := hubtest.Start(t, hub.Config{DataDir: h.DataDir})
		b2 := newBrowserish(t, h2)
		u2, _ := url.Parse(h2.URL + "/ui/")
		b2.c.Jar.SetCookies(u2, []*http.Cookie{sess})
		resp, body := b2.do("GET", "/ui/fleet", nil, nil)
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, "car-001") {
			t.Errorf("the session on a second hub sharing the key: %d", resp.StatusCode)
		}
	})

	t.Run("logout", func(t *testing.T) {
		resp, _ := b.do("POST", "/ui/logout", url.Values{"csrf": {csrf}}, nil)
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("logout: %d", resp.StatusCode)
		}
		if resp, _ := b.do("GET", "/ui/fleet", nil, nil); resp.StatusCode != http.StatusSeeOther {
			t.Errorf("after logout: %d", resp.StatusCode)
		}
	})
}

var liveVersionRE = regexp.MustCompile(`hx-headers='\{"Misaki-Live-Version": "([0-9a-f]{32})"\}'`)

func liveVersion(t *testing.T, page string) string {
	t.Helper()
	m := liveVersionRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no live version in the page:\n%s", page)
	}
	return m[1]
}

// A live part's refresh that would change nothing is answered 204 (htmx
// swaps nothing); one after a change gets the page, with a new version. A
// full page load always gets the page.
func TestLiveRefreshOnlyWhenChanged(t *testing.T) {
	h := hubtest.Start(t, hub.Config{})
	register(t, h, "car", 2, map[string]string{"fleet": "eu"})
	b := newBrowserish(t, h)
	b.login(h.Token)
	refresh := func(v string) (*http.Response, string) {
		return b.do("GET", "/ui/fleet", nil, map[string]string{"HX-Request": "true", ui.LiveVersionHeader: v})
	}

	_, page := b.do("GET", "/ui/fleet", nil, nil)
	v1 := liveVersion(t, page)
	if resp, body := refresh(v1); resp.StatusCode != http.StatusNoContent || body != "" {
		t.Fatalf("refresh of an unchanged page: %d %q, want 204 and no body", resp.StatusCode, body)
	}
	if resp, _ := b.do("GET", "/ui/fleet", nil, map[string]string{ui.LiveVersionHeader: v1}); resp.StatusCode != http.StatusOK {
		t.Fatalf("a full page load with the version: %d, want 200", resp.StatusCode)
	}
	resp, page := refresh("0123456789abcdef0123456789abcdef")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("refresh with another version: %d %q, want 200", resp.StatusCode, page)
	}
	if v := liveVersion(t, page); v != v1 {
		t.Fatalf("refresh with another version: version %s, want %s (the page did not change)", v, v1)
	}

	h.Admin(t, http.StatusOK, "PATCH", "/v1/vehicles/car-002", hubv1.VehiclePatch{Labels: map[string]string{"fleet": "us"}}, nil)
	resp, page = refresh(v1)
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, "fleet=us") {
		t.Fatalf("refresh after a change: %d, want 200 with the new label:\n%s", resp.StatusCode, page)
	}
	v2 := liveVersion(t, page)
	if v2 == v1 {
		t.Fatalf("the version did not change with the page: %s", v2)
	}
	if resp, _ := refresh(v2); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("refresh with the new version: %d, want 204", resp.StatusCode)
	}
}

// The session key is made once and read back; a damaged one is refused.
func TestLoadOrCreateKey(t *testing.T) {
	p := t.TempDir() + "/keys/ui-session.key"
	k1, err := ui.LoadOrCreateKey(p)
	if err != nil || len(k1) != ui.KeySize {
		t.Fatalf("create: %v", err)
	}
	k2, err := ui.LoadOrCreateKey(p)
	if err != nil || string(k1) != string(k2) {
		t.Fatalf("read back: %v", err)
	}
	if err := os.WriteFile(p, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ui.LoadOrCreateKey(p); err == nil {
		t.Error("a key of 5 bytes was taken")
	}
}
