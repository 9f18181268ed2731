package server

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
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
