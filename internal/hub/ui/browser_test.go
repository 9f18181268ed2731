package ui_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub"
	"github.com/misaki-io/misaki/internal/hub/catalog/catalogtest"
	"github.com/misaki-io/misaki/internal/hub/hubtest"
	"github.com/misaki-io/misaki/internal/hub/ui"
)

// The browser tests drive Debian's chromium (headless, through the
// DevTools protocol) against a real hub on loopback whose simulated
// vehicles report through the real API. MISAKI_UI_SCREENSHOTS=dir writes
// a 1280×800 PNG of each page the tests visit there (docs/images holds
// the committed ones).

var (
	small = hubv1.ResourceList{"cpu": "2", "memory": "4Gi"}   // the planner goes to the cloud
	big   = hubv1.ResourceList{"cpu": "16", "memory": "64Gi"} // everything fits on the vehicle
)

// stepTimeout bounds each wait for the page to show something.
const stepTimeout = 20 * time.Second

type env struct {
	h     *hubtest.Hub
	sims  *simFleet
	read  string // a read-scope operator token
	shots string // where screenshots go ("": none)
}

// start runs a hub with the shuttle chart's source, an online fleet of six
// simulated vehicles (car-01 to car-06, fleet=eu; the first three big
// enough for the whole chart) and 30 registered ones that never enrol
// (van-001 to van-030, fleet=us).
func start(t *testing.T) *env {
	t.Helper()
	h := hubtest.Start(t, hub.Config{UI: ui.Options{Tick: time.Second, Debounce: 200 * time.Millisecond}})
	repo := catalogtest.ServeRepo(t, catalogtest.ShuttleChart(t))
	h.Admin(t, http.StatusCreated, "POST", "/v1/sources", hubv1.ChartSource{Name: "apps", Type: hubv1.SourceHTTP, URL: repo}, nil)
	var ro hubv1.OperatorToken
	h.Admin(t, http.StatusCreated, "POST", "/v1/operator-tokens", hubv1.OperatorToken{Name: "viewer", Scope: "read"}, &ro)
	e := &env{h: h, sims: newSimFleet(t, h), read: ro.Token, shots: os.Getenv("MISAKI_UI_SCREENSHOTS")}
	for i := 1; i <= 6; i++ {
		alloc, tier := big, "a"
		if i > 3 {
			alloc, tier = small, "b"
		}
		e.sims.Start(t, fmt.Sprintf("car-%02d", i), map[string]string{"fleet": "eu", "tier": tier}, alloc)
	}
	register(t, h, "van", 30, map[string]string{"fleet": "us"})
	return e
}

// browser starts chromium for the test (skipping it when there is none)
// and returns a tab's context.
func (e *env) browser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not installed (apt-get install chromium): the browser tests need it")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.WindowSize(1280, 800),
		// The hub's certificate is from its own fleet CA.
		chromedp.Flag("ignore-certificate-errors", true),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox)
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx, chromedp.WithErrorf(t.Logf))
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800)); err != nil {
		cancelC()
		cancelA()
		t.Fatalf("start chromium: %v", err)
	}
	// The pages must run under their Content-Security-Policy without a
	// violation (no inline script or style) and without a script error.
	var mu sync.Mutex
	var bad []string
	done := make(chan struct{})
	messages := chromedp.Console(ctx)
	go func() {
		defer close(done)
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.IsException() || strings.Contains(m.Text, "Content Security Policy") {
				mu.Lock()
				bad = append(bad, m.String())
				mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		cancelC()
		cancelA()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, m := range bad {
			t.Errorf("browser console: %s", m)
		}
	})
	return ctx
}

// run runs actions within stepTimeout.
func run(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(sctx, actions...); err != nil {
		dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
		defer dcancel()
		loc, _ := chromedp.Run(dctx, chromedp.Location())
		body, _ := chromedp.Run(dctx, chromedp.Text(css("body")))
		t.Fatalf("%s: %v\nat %s:\n%s", what, err, loc, body)
	}
}

// css selects the first element a CSS selector matches.
func css(sel string) chromedp.CSS { return chromedp.CSS(sel) }

// get runs one action that gives a value.
func get[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(sctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// accessibleJS is what every page must hold to: each visible input,
// select and textarea has a label; each table has column headers; no
// positive tabindex reorders the keyboard's path; each button has text.
const accessibleJS = `(() => {
	const bad = [];
	for (const e of document.querySelectorAll("input:not([type=hidden]), select, textarea")) {
		if (e.labels.length === 0 && !e.getAttribute("aria-label")) bad.push("no label: " + (e.id || e.name));
	}
	for (const t of document.querySelectorAll("table")) {
		if (!t.querySelector("th")) bad.push("table without headers: " + (t.id || t.innerText.slice(0, 40)));
	}
	for (const e of document.querySelectorAll("[tabindex]")) {
		if (e.tabIndex > 0) bad.push("positive tabindex: " + e.outerHTML.slice(0, 60));
	}
	for (const b of document.querySelectorAll("button")) {
		if (!b.innerText.trim()) bad.push("button without text: " + b.outerHTML.slice(0, 60));
	}
	return bad;
})()`

// accessible fails the test if the page breaks accessibleJS's rules.
func accessible(t *testing.T, ctx context.Context, page string) {
	t.Helper()
	if bad := get(t, ctx, "accessibility of "+page, chromedp.Evaluate[[]string](accessibleJS)); len(bad) > 0 {
		t.Errorf("%s: %s", page, strings.Join(bad, "; "))
	}
}

// shot writes a screenshot of the viewport as name.png.
func (e *env) shot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	accessible(t, ctx, name)
	if e.shots == "" {
		return
	}
	png := get(t, ctx, "screenshot "+name, chromedp.CaptureScreenshot())
	if err := os.MkdirAll(e.shots, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.shots, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// textIn waits until the element sel's text contains want.
func textIn(sel, want string) chromedp.Action[chromedp.Void] {
	return until(fmt.Sprintf(`(() => { const e = document.querySelector(%q); return !!e && e.innerText.includes(%q); })()`, sel, want))
}

// until evaluates the JavaScript condition in the page every 100ms until it
// is true; an error (the page is being replaced) counts as false.
func until(cond string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		var last error
		for {
			ok, err := chromedp.Evaluate[bool](cond)(ctx, t)
			if err == nil && ok {
				return chromedp.Void{}, nil
			}
			if err != nil {
				last = err
			}
			select {
			case <-ctx.Done():
				return chromedp.Void{}, fmt.Errorf("waiting for %s: %w (last error: %v)", cond, ctx.Err(), last)
			case <-tick.C:
			}
		}
	}
}

// count waits until sel matches n elements.
func count(sel string, n int) chromedp.Action[chromedp.Void] {
	return until(fmt.Sprintf(`document.querySelectorAll(%q).length === %d`, sel, n))
}

func (e *env) login(t *testing.T, ctx context.Context, token string) {
	t.Helper()
	run(t, ctx, "log in",
		chromedp.Navigate(e.h.URL+"/"),
		chromedp.WaitVisible(css("#token")),
		chromedp.SendKeys(css("#token"), token),
		chromedp.Submit(css("#token")),
		chromedp.WaitVisible(css("#fleet")),
	)
}

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	return get(t, ctx, "read "+sel, chromedp.Text(css(sel)))
}

// TestBrowser: logging in, the fleet page's filters and paging, a
// vehicle's twin and placement, the catalog, creating a deployment from
// the form (refused by the values schema first), and a read-only session.
func TestBrowser(t *testing.T) {
	e := start(t)
	ctx := e.browser(t)
	ok := true // each step needs the ones before it

	ok = ok && t.Run("login", func(t *testing.T) {
		run(t, ctx, "login page",
			chromedp.Navigate(e.h.URL+"/ui/fleet"),
			chromedp.WaitVisible(css("#token")),
		)
		e.shot(t, ctx, "login")
		run(t, ctx, "a wrong token",
			chromedp.SendKeys(css("#token"), "mkh_wrong"),
			chromedp.Submit(css("#token")),
			textIn("#login-error", "does not know this token"),
		)
		e.login(t, ctx, e.h.Token)
		if got := text(t, ctx, "#scope"); got != "admin token" {
			t.Errorf("scope shown: %q", got)
		}
	})

	ok = ok && t.Run("fleet", func(t *testing.T) {
		run(t, ctx, "first page of 10",
			chromedp.Navigate(e.h.URL+"/ui/fleet?limit=10"),
			count("#fleet tbody tr[data-vehicle]", 10),
			textIn("#fleet tbody tr:first-child", "car-01"),
			textIn("#fleet tbody tr:last-child", "van-004"),
		)
		run(t, ctx, "next page",
			chromedp.Click(css(`a[rel="next"]`)),
			textIn("#fleet tbody tr:first-child", "van-005"),
			count("#fleet tbody tr[data-vehicle]", 10),
		)
		run(t, ctx, "online vehicles",
			chromedp.Navigate(e.h.URL+"/ui/fleet"),
			chromedp.WaitVisible(css("#state")),
			chromedp.SetValue(css("#state"), "online"),
			chromedp.Submit(css("#state")),
			count("#fleet tbody tr[data-vehicle]", 6),
			textIn("#fleet", "● online"),
		)
		run(t, ctx, "by label",
			chromedp.Navigate(e.h.URL+"/ui/fleet"),
			chromedp.WaitVisible(css("#selector")),
			// The keyboard alone: type, Enter.
			chromedp.SendKeys(css("#selector"), "tier=b\r"),
			count("#fleet tbody tr[data-vehicle]", 3),
			textIn("#fleet tbody", "car-04"),
		)
		run(t, ctx, "a selector that does not parse",
			chromedp.Navigate(e.h.URL+"/ui/fleet?selector="+strings.ReplaceAll("tier in (a", " ", "%20")),
			textIn("#selector-error", "selector"),
			chromedp.WaitVisible(css(`#selector[aria-invalid="true"]`)),
		)
	})

	ok = ok && t.Run("deploy", func(t *testing.T) {
		run(t, ctx, "the form",
			chromedp.Navigate(e.h.URL+"/ui/deployments/new"),
			chromedp.WaitVisible(css("#deploy-form")),
			chromedp.SendKeys(css("#name"), "shuttle"),
			chromedp.SetValue(css("#chart"), "apps/shuttle/1.0.0"),
			// htmx fetches the schema on change.
			chromedp.Evaluate[chromedp.Void](`document.querySelector("#chart").dispatchEvent(new Event("change", {bubbles: true}))`),
			textIn("#schema", "Values schema of shuttle 1.0.0"),
			chromedp.SendKeys(css("#selector"), "fleet=eu"),
			textIn("#selector-count", "6 vehicles match"),
			chromedp.SendKeys(css("#values"), "replicas: two\n"),
			chromedp.SendKeys(css("#previewVehicle"), "car-05"),
			chromedp.ScrollIntoView(css("#selector")),
		)
		e.shot(t, ctx, "deploy-form")
		run(t, ctx, "refused by the values schema",
			chromedp.Click(css("#create-button")),
			textIn("#values-error", "replicas"),
			chromedp.WaitVisible(css(`#values[aria-invalid="true"]`)),
		)
		e.shot(t, ctx, "deploy-invalid")
		run(t, ctx, "preview with valid values",
			chromedp.SetValue(css("#values"), "replicas: 2\nconfig:\n  logLevel: debug\n"),
			chromedp.Click(css("#preview-button")),
			textIn("#preview-placement", "planner"),
			textIn("#preview", "The selector matches car-05"),
			chromedp.ScrollIntoView(css("#preview")),
		)
		e.shot(t, ctx, "deploy-preview")
		run(t, ctx, "create",
			chromedp.Click(css("#create-button")),
			textIn("h1", "Deployment shuttle"),
		)
		var got hubv1.Deployment
		e.h.Admin(t, http.StatusOK, "GET", "/v1/deployments/shuttle", nil, &got)
		if got.Values["replicas"] != float64(2) || got.Selector != "fleet=eu" || got.Chart.Digest == "" || got.CreatedBy != "operator/admin" {
			t.Errorf("created: %+v", got)
		}
	})

	ok = ok && t.Run("vehicle", func(t *testing.T) {
		// car-05 is small: the planner runs in the cloud, and both halves
		// report.
		run(t, ctx, "twin",
			chromedp.Navigate(e.h.URL+"/ui/fleet"),
			textIn(`#fleet tr[data-vehicle="car-05"]`, "1 on vehicle / 1 in cloud"),
			textIn(`#fleet tr[data-vehicle="car-05"]`, "Healthy"),
			textIn(`#fleet tr[data-vehicle="van-001"]`, "offline"),
		)
		e.shot(t, ctx, "fleet")
		run(t, ctx, "vehicle page",
			chromedp.Click(css(`#fleet tr[data-vehicle="car-05"] a`)),
			textIn("h1", "Vehicle car-05"),
			textIn("#half-vehicle", "Healthy"),
			textIn("#half-cloud", "Healthy"),
			textIn("#placement", "planner"),
			textIn("#placement", "cloud"),
			textIn("#mesh", "Not reported"),
		)
		e.shot(t, ctx, "vehicle")
		run(t, ctx, "placement", chromedp.ScrollIntoView(css("#placement-h")))
		e.shot(t, ctx, "vehicle-placement")
	})

	ok = ok && t.Run("catalog", func(t *testing.T) {
		run(t, ctx, "catalog",
			chromedp.Navigate(e.h.URL+"/ui/catalog"),
			textIn("#sources", "apps"),
			textIn("#charts", "shuttle"),
			textIn("#charts", "pinned"),
		)
		e.shot(t, ctx, "catalog")
		run(t, ctx, "chart version",
			chromedp.Click(css(`#charts a`)),
			textIn("#schema", `"replicas"`),
		)
		e.shot(t, ctx, "chart")
	})

	_ = ok && t.Run("read-only", func(t *testing.T) {
		rctx := ctx
		run(t, rctx, "log out",
			chromedp.Navigate(e.h.URL+"/ui/fleet"),
			chromedp.Click(css(`header form button`)),
			chromedp.WaitVisible(css("#token")),
		)
		e.login(t, rctx, e.read)
		run(t, rctx, "new deployment, read-only",
			chromedp.Navigate(e.h.URL+"/ui/deployments/new"),
			chromedp.WaitVisible(css("#read-only")),
		)
		buttons := get(t, rctx, "count buttons", chromedp.Evaluate[int](`document.querySelectorAll("#create-button").length`))
		if buttons != 0 {
			t.Errorf("a read-only session sees %d create buttons", buttons)
		}
		if got := text(t, rctx, "#scope"); got != "read-only token" {
			t.Errorf("scope shown: %q", got)
		}
	})
}

// fillDeployment fills the new-deployment form for the shuttle chart.
func fillDeployment(name, selector, values, canary, waves string) chromedp.Action[chromedp.Void] {
	return chromedp.Steps(
		chromedp.WaitVisible(css("#deploy-form")),
		chromedp.SendKeys(css("#name"), name),
		chromedp.SetValue(css("#chart"), "apps/shuttle/1.0.0"),
		chromedp.SendKeys(css("#selector"), selector),
		chromedp.SetValue(css("#values"), values),
		chromedp.SendKeys(css("#canary"), canary),
		chromedp.SetValue(css("#waves"), waves),
	)
}

// TestRollout: a deployment created from the form rolls out through its
// waves (the canary first, while the fleet holds its reports); a new
// generation that fails on one vehicle pauses by itself, the page says
// why and which vehicle, and Resume finishes it.
func TestRollout(t *testing.T) {
	e := start(t)
	ctx := e.browser(t)
	e.login(t, ctx, e.h.Token)
	ok := true

	ok = ok && t.Run("waves", func(t *testing.T) {
		e.sims.Hold()
		run(t, ctx, "create",
			chromedp.Navigate(e.h.URL+"/ui/deployments/new"),
			fillDeployment("shuttle", "fleet=eu", "replicas: 1\n", "1", "half: 50%\n"),
			chromedp.Click(css("#create-button")),
			textIn("h1", "Deployment shuttle"),
			textIn("#deployment-rollouts", "1"),
			chromedp.Click(css("#deployment-rollouts a")),
			textIn("#waves", "canary"),
			// The canary got the generation; its report is held, so the
			// next wave waits.
			until(`document.querySelector('#waves tr[data-wave="0"] td[data-state="applying"]')?.innerText === "1"`),
			textIn(`#waves tr[data-wave="1"]`, "not started"),
			textIn("#rollout-phase", "Progressing"),
		)
		e.shot(t, ctx, "rollout-canary")
		e.sims.Release()
		// The page follows by itself (server-sent events) to the end.
		run(t, ctx, "completed",
			textIn("#rollout-phase", "Completed"),
			until(`document.querySelector('#rollout-counts td[data-state="healthy"]')?.innerText === "6"`),
			count(`#waves td .st-healthy`, 3),
		)
		e.shot(t, ctx, "rollout-completed")
	})

	ok = ok && t.Run("auto-pause", func(t *testing.T) {
		e.sims.Fail("car-02", "shuttle")
		var dep hubv1.Deployment
		e.h.Admin(t, http.StatusOK, "GET", "/v1/deployments/shuttle", nil, &dep)
		dep.Values = map[string]any{"replicas": 2}
		dep.Rollout.Waves = nil // canary, then the rest
		e.h.Admin(t, http.StatusOK, "PUT", "/v1/deployments/shuttle", dep, &dep)
		run(t, ctx, "paused",
			chromedp.Navigate(fmt.Sprintf("%s/ui/deployments/shuttle/rollouts/%d", e.h.URL, dep.Generation)),
			textIn("#rollout-phase", "Paused"),
			textIn("#rollout-reason", "fail"),
			textIn("#failed", "car-02"),
			textIn("#failed", "not ready within 1m"),
			chromedp.WaitVisible(css("#resume-button")),
		)
		e.shot(t, ctx, "rollout-paused")
		run(t, ctx, "active rollouts",
			chromedp.Navigate(e.h.URL+"/ui/rollouts"),
			textIn("#rollouts", "Paused"),
		)
		e.shot(t, ctx, "rollouts")
		run(t, ctx, "deployments",
			chromedp.Navigate(e.h.URL+"/ui/deployments"),
			textIn("#deployments", "Paused"),
		)
		e.shot(t, ctx, "deployments")
		run(t, ctx, "back to the rollout",
			chromedp.Navigate(fmt.Sprintf("%s/ui/deployments/shuttle/rollouts/%d", e.h.URL, dep.Generation)),
			chromedp.WaitVisible(css("#resume-button")),
		)
		// The paused rollout does not change: the live part's refreshes
		// (a tick each second) are answered 204 and replace nothing, so
		// the button pressed below is the one released (CI once lost the
		// click to a swap between the two).
		run(t, ctx, "refreshes that change nothing",
			until(`(() => {
				document.querySelector('#rollout-live').misakiKept = true;
				window.misakiRefreshes = [];
				document.body.addEventListener('htmx:beforeOnLoad', (e) => {
					if (e.detail.elt.id === 'rollout-live') window.misakiRefreshes.push(e.detail.xhr.status);
				});
				return true;
			})()`),
			until(`window.misakiRefreshes.length >= 2`),
		)
		if got := get(t, ctx, "after two refreshes", chromedp.Evaluate[string](
			`JSON.stringify({kept: document.querySelector('#rollout-live').misakiKept === true, statuses: window.misakiRefreshes})`)); !strings.HasPrefix(got, `{"kept":true,"statuses":[204,204`) {
			t.Fatalf("after two refreshes of the unchanged page: %s, want the same element and 204s", got)
		}
		run(t, ctx, "resume",
			chromedp.SendKeys(css("#resume-reason"), "car-02 is in the workshop"),
			chromedp.Click(css("#resume-button")),
			textIn("#rollout-phase", "Completed"),
			until(`document.querySelector('#rollout-counts td[data-state="healthy"]')?.innerText === "5"`),
		)
		e.shot(t, ctx, "rollout-resumed")
		var audit hubv1.List[hubv1.AuditEntry]
		e.h.Admin(t, http.StatusOK, "GET", "/v1/audit", nil, &audit)
		found := false
		for _, a := range audit.Items {
			found = found || a.Action == "resume" && a.Actor == "operator/admin" && strings.Contains(a.Detail, "workshop")
		}
		if !found {
			t.Errorf("no audit entry for the resume from the UI: %+v", audit.Items)
		}
	})

	_ = ok && t.Run("deployment", func(t *testing.T) {
		run(t, ctx, "deployment page",
			chromedp.Navigate(e.h.URL+"/ui/deployments/shuttle"),
			count("#deployment-rollouts tbody tr", 2),
			count("#versions tbody tr", 2),
			chromedp.WaitVisible(css("#versions form button")),
		)
		e.shot(t, ctx, "deployment")
	})
}
