package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	linkv1 "github.com/misaki-io/misaki/api/link/v1"
	proxyv1 "github.com/misaki-io/misaki/api/proxy/v1"
	"github.com/misaki-io/misaki/internal/waitfor"
)

// TestAdminAPIAndMetrics drives traffic through every outcome the issue names
// and reads it back from the real admin endpoints.
func TestAdminAPIAndMetrics(t *testing.T) {
	onEachServer(t, func(t *testing.T, srv http1Server) {
		up := newUpstream(t, nil)
		p := srv.start(t, routeYAML(up.URL, ", links: [wifi]"), true)

		get := func(path string) (int, string) {
			t.Helper()
			resp, err := http.Get("http://" + p.admin + path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		put := func(path, body string) (int, string) {
			t.Helper()
			req, _ := http.NewRequest(http.MethodPut, "http://"+p.admin+path, strings.NewReader(body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}

		if code, body := get("/healthz"); code != 200 || body != "ok\n" {
			t.Errorf("/healthz: %d %q", code, body)
		}
		if code, _ := get("/readyz"); code != 200 {
			t.Errorf("/readyz: %d", code)
		}
		for _, c := range []struct {
			path, body string
			code       int
			want       string
		}{
			{"/v1/links/nope", `{"state":"down"}`, 404, "unknown link"},
			{"/v1/links/wlan", `{"state":"sideways"}`, 400, "use up, down or auto"},
			{"/v1/links/wlan", `{"state":"down","extra":1}`, 400, "unknown field"},
			{"/v1/links/wlan", `not json`, 400, "must be one JSON object"},
			{"/v1/links/wlan", `{"state":"down"} {"state":"up"}`, 400, "trailing data"},
		} {
			if code, body := put(c.path, c.body); code != c.code || !strings.Contains(body, c.want) {
				t.Errorf("PUT %s %s: %d %q, want %d containing %q", c.path, c.body, code, body, c.code, c.want)
			}
		}

		// direct, then held (released by wifi), then expired.
		p.send(context.Background(), "telemetry.cloud.misaki", "d", nil, nil)
		p.setLink(t, "wlan", "down")
		done := p.sendHeld(t, context.Background(), "h", nil, nil)
		_, metricsHeld := get("/metrics")
		p.setLink(t, "wlan", "up")
		<-done
		p.setLink(t, "wlan", "down")
		done = p.sendHeld(t, context.Background(), "x", nil, nil)
		p.clock.Advance(30 * 1e9)
		<-done
		p.send(context.Background(), "nowhere.mesh", "n", nil, nil)

		_, links := get("/v1/links")
		if !strings.Contains(links, `"name": "wlan"`) || !strings.Contains(links, `"source": "admin"`) {
			t.Errorf("/v1/links: %s", links)
		}
		_, routes := get("/v1/routes")
		if !strings.Contains(routes, `"usable": false`) || !strings.Contains(routes, "not of an allowed class") {
			t.Errorf("/v1/routes: %s", routes)
		}
		_, metrics := get("/metrics")
		for _, want := range []string{
			`misaki_proxy_requests_total{outcome="direct",route="telemetry"} 1`,
			`misaki_proxy_requests_total{outcome="held",route="telemetry"} 1`,
			`misaki_proxy_requests_total{outcome="hold_expired",route="telemetry"} 1`,
			`misaki_proxy_requests_total{outcome="no_route",route=""} 1`,
			`misaki_proxy_hold_wait_seconds_count{outcome="released",route="telemetry"} 1`,
			`misaki_proxy_hold_wait_seconds_count{outcome="expired",route="telemetry"} 1`,
			`misaki_proxy_held_requests{route="telemetry"} 0`,
			`misaki_proxy_route_usable{route="telemetry"} 0`,
			`misaki_link_up{class="wifi",link="wlan",source="admin"} 0`,
			`misaki_link_up{class="cellular",link="modem",source="config"} 1`,
			`misaki_link_flag{flag="metered",link="modem"} 1`,
			`misaki_proxy_upstream_reachable{route="telemetry",upstream="` + up.URL + `"} 1`,
			`misaki_proxy_request_duration_seconds_count{delivery="held",route="telemetry"} 1`,
			"go_goroutines", "process_resident_memory_bytes",
		} {
			if !strings.Contains(metrics, want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
		if !strings.Contains(metricsHeld, `misaki_proxy_held_requests{route="telemetry"} 1`) ||
			!strings.Contains(metricsHeld, `misaki_proxy_held_bytes{route="telemetry"}`) {
			t.Errorf("/metrics while holding lacks the held gauges")
		}
	})
}

// TestHealthAddressServesOnlyProbes: the health address answers the
// kubelet's probes and nothing of the admin API. It sends nothing to the
// mesh listener, so it runs on the default HTTP/1.1 server only.
func TestHealthAddressServesOnlyProbes(t *testing.T) {
	up := newUpstream(t, nil)
	p := startProxy(t, "health: 127.0.0.1:0\n"+routeYAML(up.URL, ""), false)
	h := p.HealthAddr()
	if h == "" || h == p.admin {
		t.Fatalf("health address %q (admin %s)", h, p.admin)
	}
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/v1/links": 404, "/metrics": 404, "/v1/routes": 404} {
		resp, err := http.Get("http://" + h + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("health %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	p.stop()
	if _, err := http.Get("http://" + h + "/healthz"); err == nil {
		t.Error("health address still answers after shutdown")
	}
}

// TestAdminWireTypes pins the admin API's contract. The key paths listed
// for each endpoint are the contract: a key renamed, dropped or newly
// omitted fails here. The live answer also decodes into its type in
// api/proxy/v1 with no unknown field and encodes back to the same JSON;
// since the proxy serves those very types that part cannot fail today, and
// it guards a handler that one day writes a map or another struct. The proxy has links of every kind (config, a
// glob, the node link agent's), a route with a budget that spools, and a
// spooled request with a callback, so that the optional fields are served.
func TestAdminWireTypes(t *testing.T) {
	onEachServer(t, func(t *testing.T, srv http1Server) {
		agent := newFakeLinkAgent(t, linkv1.Snapshot{Version: 1, Agent: "node/1", Links: []linkv1.Link{
			{Name: "sat", Class: "satellite", Metered: true, Source: "kernel", Reason: "no carrier",
				Steer: &linkv1.Steer{Mark: 0x4d5a0002, Table: 15102, Ports: [2]uint16{64000, 64049}}},
		}})
		callbacks := make(chan []byte, 1)
		cb := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			callbacks <- b
		})
		up := newUpstream(t, nil)
		p := srv.start(t, fmt.Sprintf(`
spool: {dir: %s, replay: {backoff: {initial: 10ms, max: 50ms}}}
linkAgent: {address: %s}
links:
  - {name: wlan, class: wifi}
  - {name: modem, class: cellular, metered: true}
  - {name: loop, match: "lo", class: ethernet}
routes:
  - name: telemetry
    hosts: [telemetry.cloud.misaki]
    upstream: %s
    probe: {type: none}
    offline: {hold: 30s, links: [wifi], spool: true, budget: {daily: 1GiB}}
`, t.TempDir(), agent.Listener.Addr(), up.URL), false)
		admin := func(method, path, body string) (int, []byte) {
			t.Helper()
			req, _ := http.NewRequest(method, "http://"+p.admin+path, strings.NewReader(body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, b
		}

		var links proxyv1.Links
		_, b := admin("GET", "/v1/links", "")
		decodeExactly(t, "GET /v1/links", b, &links, "agent.address agent.connected "+
			"links[].name links[].class links[].metered links[].roaming links[].up links[].source links[].since "+
			"links[].interfaces[].name links[].interfaces[].up links[].interfaces[].running links[].interfaces[].addrs[] "+
			"links[].agent links[].reason links[].steer.mark links[].steer.table links[].steer.ports[]")
		if links.Agent == nil || !slices.ContainsFunc(links.Links, func(l proxyv1.Link) bool { return l.Agent && l.Steer != nil && l.Reason != "" }) ||
			!slices.ContainsFunc(links.Links, func(l proxyv1.Link) bool { return len(l.Interfaces) > 0 }) {
			t.Errorf("GET /v1/links lacks the agent, an agent's link or a link's interfaces: %s", b)
		}
		var l proxyv1.Link
		code, b := admin("PUT", "/v1/links/wlan", `{"state":"down","metered":false}`)
		decodeExactly(t, "PUT /v1/links/wlan", b, &l, "name class metered roaming up source since")
		if code != 200 || l.Name != "wlan" || l.Up {
			t.Errorf("PUT /v1/links/wlan: %d %s", code, b)
		}
		var e proxyv1.Error
		code, b = admin("PUT", "/v1/links/wlan", `{"state":"sideways"}`)
		decodeExactly(t, "PUT /v1/links/wlan (bad)", b, &e, "error")
		if code != 400 || e.Message == "" {
			t.Errorf("PUT /v1/links/wlan with a bad state: %d %s", code, b)
		}

		// Spooled at once: 202 with its body, then queued.
		r := p.send(context.Background(), "telemetry.cloud.misaki", "w", map[string]string{"Prefer": "respond-async", "Misaki-Callback": cb.URL}, []byte("body"))
		var acc proxyv1.Accepted
		decodeExactly(t, "the 202", []byte(r.body), &acc, "id state route")
		if r.status != 202 || acc.ID != r.header.Get("Misaki-Request-Id") || acc.State != proxyv1.StateQueued || acc.Route != "telemetry" {
			t.Fatalf("spooling: %d %q", r.status, r.body)
		}
		var req proxyv1.Request
		_, b = admin("GET", "/v1/requests/"+acc.ID, "")
		decodeExactly(t, "GET /v1/requests/{id} (queued)", b, &req, "id route state attempts")
		if req.ID != acc.ID || req.State != proxyv1.StateQueued {
			t.Errorf("the queued request: %s", b)
		}
		var routes proxyv1.Routes
		_, b = admin("GET", "/v1/routes", "")
		decodeExactly(t, "GET /v1/routes", b, &routes, "routes[].name routes[].hosts[] routes[].upstream routes[].usable routes[].reason routes[].links[] "+
			"routes[].hold routes[].upstreamHealth.reachable routes[].upstreamHealth.since routes[].upstreamHealth.source "+
			"routes[].heldRequests routes[].heldBytes "+
			"routes[].budget.day routes[].budget.month routes[].budget.dailyBytes routes[].budget.monthlyBytes routes[].budget.dailyLimit routes[].budget.exceeded")
		if len(routes.Routes) != 1 || routes.Routes[0].Usable || routes.Routes[0].Reason == "" || routes.Routes[0].Budget == nil {
			t.Errorf("GET /v1/routes: %s", b)
		}
		var sp proxyv1.Spool
		_, b = admin("GET", "/v1/spool", "")
		decodeExactly(t, "GET /v1/spool", b, &sp, "enabled dir "+
			"routes[].route routes[].priority routes[].depth routes[].bytes routes[].delivering routes[].oldestAgeSeconds "+spoolStatsKeys)
		if !sp.Enabled || len(sp.Routes) != 1 || sp.Routes[0].Depth != 1 || sp.Stats.Enqueued != 1 {
			t.Errorf("GET /v1/spool: %s", b)
		}
		code, b = admin("GET", "/v1/requests/nope", "")
		decodeExactly(t, "GET /v1/requests/nope", b, &e, "error")
		if code != 404 {
			t.Errorf("GET /v1/requests/nope: %d %s", code, b)
		}

		// Delivered: the callback's body and the finished request.
		p.setLink(t, "wlan", "up")
		select {
		case b = <-callbacks:
		case <-time.After(10 * time.Second):
			t.Fatal("no callback")
		}
		decodeExactly(t, "the callback", b, &req, "id route state finished attempts response.status response.headers response.body callback")
		waitfor.True(t, "the callback recorded", func() bool {
			_, b = admin("GET", "/v1/requests/"+acc.ID, "")
			return strings.Contains(string(b), `"callbackDone": true`)
		})
		req = proxyv1.Request{}
		decodeExactly(t, "GET /v1/requests/{id} (finished)", b, &req, "id route state finished attempts response.status response.headers response.body callback callbackDone")
		if req.State != proxyv1.StateDelivered || req.Response == nil || string(req.Response.Body) != "hello w" || req.Finished.IsZero() {
			t.Errorf("the finished request: %s", b)
		}
	})
}

// TestAdminWithoutSpool: a proxy with no spool says so at GET /v1/spool,
// and knows no request. It sends nothing to the mesh listener, so it runs
// on the default HTTP/1.1 server only.
func TestAdminWithoutSpool(t *testing.T) {
	up := newUpstream(t, nil)
	p := startProxy(t, routeYAML(up.URL, ""), false)
	resp, err := http.Get("http://" + p.admin + "/v1/spool")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var sp proxyv1.Spool
	decodeExactly(t, "GET /v1/spool", b, &sp, "enabled routes[] "+spoolStatsKeys)
	if sp.Enabled || sp.Routes == nil || len(sp.Routes) != 0 {
		t.Errorf("GET /v1/spool without a spool: %s", b)
	}
	for _, method := range []string{http.MethodGet, http.MethodDelete} {
		req, _ := http.NewRequest(method, "http://"+p.admin+"/v1/requests/1", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var e proxyv1.Error
		decodeExactly(t, method+" /v1/requests/1", b, &e, "error")
		if resp.StatusCode != 404 {
			t.Errorf("%s /v1/requests/1 without a spool: %d %s", method, resp.StatusCode, b)
		}
	}
}

// spoolStatsKeys are the keys of GET /v1/spool's stats.
const spoolStatsKeys = "stats.Enqueued stats.Delivered stats.Failed stats.Expired stats.Cancelled stats.Evicted stats.Rejected " +
	"stats.DamagedSpans stats.DamagedBytes stats.TornBytes stats.MissingBodies stats.Fsyncs stats.Segments"

// decodeExactly checks one answer of the admin API against its type in
// api/proxy/v1 and against keys, the paths of every key served (as
// "routes[].upstreamHealth.since", space-separated, in any order; a
// response's headers are one key, an empty list is "name[]"). It decodes
// body into v, refusing unknown fields and anything after the value, and
// checks that v encodes back to the JSON served. So the type and the
// names served are pinned apart: renaming a field in the type fails on
// keys.
func decodeExactly(t *testing.T, what string, body []byte, v any, keys string) {
	t.Helper()
	var served any
	if err := json.Unmarshal(body, &served); err != nil {
		t.Fatalf("%s: %v in %s", what, err, body)
	}
	got := map[string]bool{}
	keyPaths("", served, got)
	want := map[string]bool{}
	for _, k := range strings.Fields(keys) {
		want[k] = true
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("%s: keys served (-want +got):\n%s", what, d)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v in %s", what, err, body)
	}
	if dec.More() {
		t.Fatalf("%s: more than one value in %s", what, body)
	}
	again, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var typed any
	if err := json.Unmarshal(again, &typed); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(served, typed); d != "" {
		t.Errorf("%s: the type encodes otherwise than the proxy served (-served +type):\n%s", what, d)
	}
}

// keyPaths adds the paths of the keys in v, a decoded JSON value, to out.
func keyPaths(prefix string, v any, out map[string]bool) {
	switch x := v.(type) {
	case map[string]any:
		if strings.HasSuffix(prefix, ".headers") {
			out[prefix] = true
			return
		}
		for k, e := range x {
			keyPaths(strings.TrimPrefix(prefix+"."+k, "."), e, out)
		}
	case []any:
		for _, e := range x {
			keyPaths(prefix+"[]", e, out)
		}
		if len(x) == 0 {
			out[prefix+"[]"] = true
		}
	default:
		out[prefix] = true
	}
}
