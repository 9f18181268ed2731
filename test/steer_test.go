package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/misaki-io/misaki/internal/waitfor"
)

// TestRouteSteeredOntoAllowedLink builds two real links to a cloud
// namespace: "wifi" and a metered "cellular" whose route to the upstream the
// kernel prefers. A route allowed on any link goes the kernel's way (over
// cellular); a Wi-Fi-only route must leave by the Wi-Fi interface although
// cellular is up, and is held, not sent over cellular, when Wi-Fi goes down.
func TestRouteSteeredOntoAllowedLink(t *testing.T) {
	id, sid := testID(1)
	ns := newCloudNS(t, "misaki-s"+sid)
	wifi, cell := "mskw"+sid, "mskm"+sid
	n := id % 250
	wifiNet, cellNet, cloudIP := fmt.Sprintf("10.196.%d", n), fmt.Sprintf("10.195.%d", n), fmt.Sprintf("10.194.%d.1", n)
	ns.link(wifi, "mska"+sid, wifiNet)
	ns.link(cell, "mskb"+sid, cellNet)
	ip := ns.ip
	ip("-n", ns.name, "addr", "add", cloudIP+"/32", "dev", "lo")
	// The kernel prefers cellular for the cloud; Wi-Fi is the fallback route.
	ip("route", "add", cloudIP+"/32", "via", cellNet+".2", "dev", cell, "metric", "10")
	ip("route", "add", cloudIP+"/32", "via", wifiNet+".2", "dev", wifi, "metric", "20")

	var mu sync.Mutex
	from := map[string]string{} // request id → source address
	upAddr := ns.serve(cloudIP+":0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		mu.Lock()
		from[r.Header.Get("X-Req-Id")] = host
		mu.Unlock()
		fmt.Fprint(w, "ok")
	}))
	source := func(id string) string {
		mu.Lock()
		defer mu.Unlock()
		return from[id]
	}

	p := startProxyBinary(t, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: 127.0.0.1:0
linkScan: {pollInterval: 60s}
links:
  - {name: wlan,  match: "%s", class: wifi}
  - {name: modem, match: "%s", class: cellular, metered: true}
routes:
  - name: telemetry
    hosts: [telemetry.cloud]
    upstream: http://%s
    probe: {type: tcp, interval: 5s, backoff: {initial: 50ms, max: 200ms}}
    offline: {hold: 20s}
  - name: video
    hosts: [video.cloud]
    upstream: http://%s
    probe: {type: tcp, interval: 5s, backoff: {initial: 50ms, max: 200ms}}
    offline: {hold: 20s, links: [wifi]}
`, wifi, cell, upAddr, upAddr))

	get := func(host, id string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+p.mesh+"/", nil)
		req.Host = host
		req.Header.Set("X-Req-Id", id)
		resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, resp.Header.Get("Misaki-Delivery")
	}
	steered := func() string {
		resp, err := http.Get("http://" + p.admin + "/v1/routes")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		var body struct {
			Routes []struct{ Name, Interface string } `json:"routes"`
		}
		json.NewDecoder(resp.Body).Decode(&body)
		for _, r := range body.Routes {
			if r.Name == "video" {
				return r.Interface
			}
		}
		return ""
	}
	waitfor.True(t, "video route steered onto "+wifi, func() bool { return steered() == wifi })

	if code, d := get("telemetry.cloud", "t1"); code != 200 || d != "direct" || source("t1") != cellNet+".1" {
		t.Fatalf("telemetry: %d %s from %q; want the kernel's choice, cellular %s.1", code, d, source("t1"), cellNet)
	}
	if code, d := get("video.cloud", "v1"); code != 200 || d != "direct" || source("v1") != wifiNet+".1" {
		t.Fatalf("video: %d %s from %q; want Wi-Fi %s.1 although the kernel prefers cellular", code, d, source("v1"), wifiNet)
	}

	// Wi-Fi goes down: video waits; it does not fall back to cellular. (A
	// request sent before the proxy sees the link go is already in flight on
	// the Wi-Fi connection and rides on it; the test sends after.)
	ip("link", "set", wifi, "down")
	waitfor.True(t, "the proxy sees Wi-Fi go down", func() bool { return steered() == "" })
	done := make(chan [2]string, 1)
	go func() {
		code, d := get("video.cloud", "v2")
		done <- [2]string{fmt.Sprint(code), d}
	}()
	waitfor.True(t, "video request held while only cellular is up", func() bool { return heldRequests(t, p.admin) == 1 })
	if code, _ := get("telemetry.cloud", "t2"); code != 200 || source("t2") != cellNet+".1" {
		t.Fatalf("telemetry during the Wi-Fi outage: %d from %q", code, source("t2"))
	}
	ip("link", "set", wifi, "up")
	if r := <-done; r != [2]string{"200", "held"} || source("v2") != wifiNet+".1" {
		t.Fatalf("video after Wi-Fi returned: %v from %q", r, source("v2"))
	}
}
