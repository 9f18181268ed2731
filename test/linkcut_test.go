package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/misaki-io/misaki/internal/waitfor"
)

// TestRealLinkCut cuts a real link: a veth pair whose vehicle end sits in this
// namespace (watched by the proxy as link "wlan") and whose cloud end sits in
// a network namespace the test creates, where the upstream listens. Taking
// the vehicle end down must hold requests; bringing it up must release them.
// The proxy polls only every 60s, so the quick reaction comes from netlink.
func TestRealLinkCut(t *testing.T) {
	id, sid := testID(0)
	ns := newCloudNS(t, "misaki-t"+sid)
	veh, cloud := "mskw"+sid, "mskc"+sid
	subnet := fmt.Sprintf("10.199.%d", id%250)
	ns.link(veh, cloud, subnet)
	ip := ns.ip

	var hits atomic.Int32
	upAddr := ns.serve(subnet+".2:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fmt.Fprintf(w, "cloud saw %s", r.Header.Get("X-Req-Id"))
	}))

	p := startProxyBinary(t, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: 127.0.0.1:0
linkScan: {pollInterval: 60s}
links:
  - {name: wlan, match: "%s", class: wifi}
routes:
  - name: cloud
    hosts: [cloud.misaki]
    upstream: http://%s
    probe: {type: tcp, interval: 5s, backoff: {initial: 50ms, max: 200ms}}
    offline: {hold: 20s, links: [wifi]}
`, veh, upAddr))

	get := func(id string) (*http.Response, string, error) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+p.mesh+"/", nil)
		req.Host = "cloud.misaki"
		req.Header.Set("X-Req-Id", id)
		resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
		if err != nil {
			return nil, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b), nil
	}
	waitLink := func(up bool) {
		t.Helper()
		waitfor.True(t, fmt.Sprintf("link wlan up=%v (netlink events not seen)", up), func() bool {
			var body struct {
				Links []struct {
					Name string `json:"name"`
					Up   bool   `json:"up"`
				} `json:"links"`
			}
			resp, err := http.Get("http://" + p.admin + "/v1/links")
			if err != nil {
				return false
			}
			json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			return len(body.Links) == 1 && body.Links[0].Up == up
		})
	}
	waitLink(true)
	if resp, body, err := get("online"); err != nil || resp.StatusCode != 200 || resp.Header.Get("Misaki-Delivery") != "direct" {
		t.Fatalf("online: %v %v %q", resp, err, body)
	}

	ip("link", "set", veh, "down")
	waitLink(false)
	type res struct {
		resp *http.Response
		body string
		err  error
	}
	done := make(chan res, 1)
	go func() {
		resp, body, err := get("during-cut")
		done <- res{resp, body, err}
	}()
	waitfor.True(t, "request held after the link went down", func() bool { return heldRequests(t, p.admin) == 1 })
	if hits.Load() != 1 {
		t.Fatalf("upstream saw %d requests during the cut", hits.Load())
	}
	restored := time.Now()
	ip("link", "set", veh, "up")
	r := <-done
	if r.err != nil || r.resp.StatusCode != 200 || r.resp.Header.Get("Misaki-Delivery") != "held" || r.body != "cloud saw during-cut" {
		t.Fatalf("after the link returned: %+v %v %q", r.resp, r.err, r.body)
	}
	t.Logf("held request answered %v after the link came back", time.Since(restored).Round(time.Millisecond))
	if hits.Load() != 2 {
		t.Fatalf("upstream saw %d requests, want 2", hits.Load())
	}
}

func heldRequests(t *testing.T, admin string) int {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/v1/routes")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Routes []struct {
			Held int `json:"heldRequests"`
		} `json:"routes"`
	}
	json.NewDecoder(resp.Body).Decode(&body)
	n := 0
	for _, r := range body.Routes {
		n += r.Held
	}
	return n
}
