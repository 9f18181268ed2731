package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/misaki-io/misaki/internal/proxy/config"
	"github.com/misaki-io/misaki/internal/proxy/link"
	"github.com/misaki-io/misaki/internal/proxy/spool"
	"github.com/misaki-io/misaki/internal/uuidv7"
	"github.com/misaki-io/misaki/internal/waitfor"
)

// spoolYAML is a telemetry route that holds for 30s, then spools.
func spoolYAML(dir, upstreamURL, offline string) string {
	return fmt.Sprintf("spool: {dir: %s, replay: {backoff: {initial: 10ms, max: 50ms}}}\n", dir) +
		routeYAML(upstreamURL, ", spool: true"+offline)
}

// getJSON reads an admin endpoint into a map.
func getJSON(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

// spoolOne sends a request while offline and checks its 202.
func (p *proxy) spoolOne(t *testing.T, id string, hdr map[string]string, body []byte) (reqID, location string) {
	t.Helper()
	h := map[string]string{"Prefer": "respond-async"}
	for k, v := range hdr {
		h[k] = v
	}
	r := p.send(context.Background(), "telemetry.cloud.misaki", id, h, body)
	if r.status != http.StatusAccepted || r.header.Get("Misaki-Delivery") != "spooled" || r.header.Get("Misaki-Request-Id") == "" {
		t.Fatalf("spooling %s: %d %q %v", id, r.status, r.body, r.header)
	}
	loc := r.header.Get("Location")
	if loc != "http://"+p.admin+"/v1/requests/"+r.header.Get("Misaki-Request-Id") {
		t.Fatalf("Location %q", loc)
	}
	return r.header.Get("Misaki-Request-Id"), loc
}

func waitState(t *testing.T, loc, state string) map[string]any {
	t.Helper()
	var m map[string]any
	waitfor.True(t, "state "+state+" at "+loc, func() bool {
		_, m = getJSON(t, loc)
		return m["state"] == state
	})
	return m
}

func TestSpoolAfterHoldWindowAndReplay(t *testing.T) {
	onEachServer(t, func(t *testing.T, srv http1Server) {
		var keys sync.Map
		up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			keys.Store(r.Header.Get("X-Req-Id"), r.Header.Get("Idempotency-Key"))
			w.Header().Set("X-Answer", "yes")
			fmt.Fprintf(w, "got %s", b)
		})
		p := srv.start(t, spoolYAML(t.TempDir(), up.URL, ""), true)
		p.offline(t)

		// Held first; when the window passes it is spooled, not refused.
		done := p.sendHeld(t, context.Background(), "late", map[string]string{"Idempotency-Key": "app-key-1"}, []byte("payload"))
		p.clock.Advance(31 * time.Second)
		r := <-done
		if r.status != http.StatusAccepted || r.header.Get("Misaki-Delivery") != "spooled" {
			t.Fatalf("after the window: %d %q", r.status, r.body)
		}
		loc := r.header.Get("Location")
		if m := waitState(t, loc, "queued"); m["route"] != "telemetry" {
			t.Fatalf("status: %v", m)
		}
		_, async := p.spoolOne(t, "async", nil, []byte("second"))
		if up.total() != 0 {
			t.Fatal("a spooled request reached the upstream while offline")
		}
		if _, sp := getJSON(t, "http://"+p.admin+"/v1/spool"); !strings.Contains(fmt.Sprint(sp["routes"]), "depth:2") {
			t.Fatalf("/v1/spool: %v", sp)
		}

		p.setLink(t, "wlan", "up")
		m := waitState(t, loc, "delivered")
		resp := m["response"].(map[string]any)
		if resp["status"] != 200.0 || !strings.Contains(fmt.Sprint(resp["headers"]), "X-Answer:[yes]") {
			t.Fatalf("delivered result: %v", m)
		}
		waitState(t, async, "delivered")
		if up.count("late") != 1 || up.count("async") != 1 {
			t.Fatalf("upstream saw late %d, async %d times; want once each", up.count("late"), up.count("async"))
		}
		if k, _ := keys.Load("late"); k != "app-key-1" {
			t.Fatalf("Idempotency-Key %q, want the app's own", k)
		}
		if k, _ := keys.Load("async"); k == nil {
			t.Fatal("no Idempotency-Key assigned")
		} else if at, ok := uuidv7.Time(k.(string)); !ok || time.Since(at).Abs() > time.Minute {
			t.Fatalf("assigned Idempotency-Key %q: not a UUID version 7 of now", k)
		}
	})
}

func TestSpoolSurvivesRestart(t *testing.T) {
	onEachServer(t, func(t *testing.T, srv http1Server) {
		up := newUpstream(t, nil)
		dir := t.TempDir()
		p := srv.start(t, spoolYAML(dir, up.URL, ""), true)
		p.offline(t)
		var locs []string
		for i := range 5 {
			_, loc := p.spoolOne(t, fmt.Sprint("r", i), nil, []byte(strings.Repeat("x", i*100)))
			locs = append(locs, strings.TrimPrefix(loc, "http://"+p.admin))
		}
		p.stop()

		if up.total() != 0 {
			t.Fatal("a spooled request reached the upstream while offline")
		}
		// The new proxy's links start up: it delivers what the old one spooled.
		p2 := srv.start(t, spoolYAML(dir, up.URL, ""), true)
		for _, l := range locs {
			waitState(t, "http://"+p2.admin+l, "delivered")
		}
		for i := range 5 {
			if n := up.count(fmt.Sprint("r", i)); n != 1 {
				t.Fatalf("r%d reached the upstream %d times", i, n)
			}
		}
	})
}

func TestSpoolRetriesThenDelivers(t *testing.T) {
	onEachServer(t, func(t *testing.T, srv http1Server) {
		var calls atomic.Int32
		up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			if calls.Add(1) <= 2 {
				http.Error(w, "busy", http.StatusServiceUnavailable)
				return
			}
			fmt.Fprint(w, "finally")
		})
		p := srv.start(t, spoolYAML(t.TempDir(), up.URL, ""), false)
		p.offline(t)
		_, loc := p.spoolOne(t, "r", nil, []byte("b"))
		p.setLink(t, "wlan", "up")
		m := waitState(t, loc, "delivered")
		if m["attempts"] != 3.0 || calls.Load() != 3 {
			t.Fatalf("attempts %v, upstream calls %d; want 3", m["attempts"], calls.Load())
		}
	})
}

func TestSpoolFinalAnswers(t *testing.T) {
	onEachServer(t, func(t *testing.T, srv http1Server) {
		up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "no such thing", http.StatusNotFound)
		})
		p := srv.start(t, spoolYAML(t.TempDir(), up.URL, ", unsafeMethods: [DELETE], quota: {requests: 2}"), true)
		p.offline(t)

		t.Run("a 4xx is final", func(t *testing.T) {
			_, loc := p.spoolOne(t, "r", nil, nil)
			p.setLink(t, "wlan", "up")
			m := waitState(t, loc, "failed")
			if m["response"].(map[string]any)["status"] != 404.0 || up.count("r") != 1 {
				t.Fatalf("result %v, upstream saw %d", m, up.count("r"))
			}
			p.offline(t)
		})
		t.Run("unsafe methods are not spooled", func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodDelete, "http://"+p.mesh+"/x", nil)
			req.Host = "telemetry.cloud.misaki"
			req.Header.Set("Prefer", "respond-async, wait=0")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 503 || !strings.Contains(string(b), "DELETE is not spooled") {
				t.Fatalf("DELETE: %d %q", resp.StatusCode, b)
			}
		})
		t.Run("quota reached is 507", func(t *testing.T) {
			p.spoolOne(t, "q1", nil, nil)
			p.spoolOne(t, "q2", nil, nil)
			r := p.send(context.Background(), "telemetry.cloud.misaki", "q3", map[string]string{"Prefer": "respond-async"}, nil)
			if r.status != http.StatusInsufficientStorage || !strings.Contains(r.body, "route telemetry holds 2 requests") {
				t.Fatalf("over quota: %d %q", r.status, r.body)
			}
		})
	})
}

func TestSpoolCancelAndExpire(t *testing.T) {
	onEachServer(t, func(t *testing.T, srv http1Server) {
		up := newUpstream(t, nil)
		p := srv.start(t, spoolYAML(t.TempDir(), up.URL, ", ttl: 1h"), true)
		p.offline(t)
		cancelID, cancelLoc := p.spoolOne(t, "cancel-me", nil, nil)
		_, expireLoc := p.spoolOne(t, "expire-me", nil, nil)

		del := func() int {
			req, _ := http.NewRequest(http.MethodDelete, cancelLoc, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		if code := del(); code != http.StatusNoContent {
			t.Fatalf("DELETE: %d", code)
		}
		if code := del(); code != http.StatusNotFound {
			t.Fatalf("second DELETE: %d", code)
		}
		if m := waitState(t, cancelLoc, "cancelled"); m["id"] != cancelID {
			t.Fatalf("cancelled: %v", m)
		}
		p.clock.Advance(2 * time.Hour)
		waitState(t, expireLoc, "expired")
		p.setLink(t, "wlan", "up")
		if code, _ := getJSON(t, "http://"+p.admin+"/v1/requests/999999"); code != http.StatusNotFound {
			t.Fatalf("unknown id: %d", code)
		}
		if _, sp := getJSON(t, "http://"+p.admin+"/v1/spool"); strings.Contains(fmt.Sprint(sp["routes"]), "depth:1") ||
			strings.Contains(fmt.Sprint(sp["routes"]), "depth:2") {
			t.Fatalf("spool after cancel and expiry: %v", sp)
		}
		if up.total() != 0 {
			t.Fatal("a cancelled or expired request was delivered")
		}
	})
}

func TestSpoolCallback(t *testing.T) {
	onEachServer(t, func(t *testing.T, srv http1Server) {
		got := make(chan map[string]any, 1)
		var tries atomic.Int32
		cb := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			if tries.Add(1) == 1 {
				http.Error(w, "not yet", http.StatusServiceUnavailable)
				return
			}
			var m map[string]any
			json.NewDecoder(r.Body).Decode(&m)
			got <- m
		})
		up := newUpstream(t, nil)
		p := srv.start(t, spoolYAML(t.TempDir(), up.URL, ""), false)
		p.offline(t)
		r := p.send(context.Background(), "telemetry.cloud.misaki", "bad", map[string]string{"Prefer": "respond-async", "Misaki-Callback": "not a url"}, nil)
		if r.status != 400 || !strings.Contains(r.body, "Misaki-Callback") {
			t.Fatalf("bad callback URL: %d %q", r.status, r.body)
		}
		id, _ := p.spoolOne(t, "cb", map[string]string{"Misaki-Callback": cb.URL + "/done"}, []byte("b"))
		p.setLink(t, "wlan", "up")
		select {
		case m := <-got:
			if m["id"] != id || m["state"] != "delivered" {
				t.Fatalf("callback body: %v", m)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no callback")
		}
		waitfor.True(t, "callback recorded", func() bool {
			_, m := getJSON(t, "http://"+p.admin+"/v1/requests/"+id)
			return m["callbackDone"] == true
		})
	})
}

// A proxy that starts with a backlog delivers nothing before its first link
// scan: routes are not usable until the scan says so. The scan here is held
// back, as a slow one would be. Only the replayer sends requests here, not
// the mesh listener: one HTTP/1.1 server is enough.
func TestBacklogNotReplayedBeforeTheFirstScan(t *testing.T) {
	up := newUpstream(t, nil)
	dir := t.TempDir()
	sp, err := spool.Open(spool.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sp.Enqueue(&spool.Record{Route: "telemetry", Method: "POST", URL: "http://telemetry.cloud.misaki/x",
		Header: http.Header{"X-Req-Id": {"backlog"}}, IdempotencyKey: "k"}, nil, spool.Limits{}); err != nil {
		t.Fatal(err)
	}
	sp.Close()
	cfg, err := config.Parse([]byte(fmt.Sprintf(`
listen: 127.0.0.1:0
admin: 127.0.0.1:0
spool: {dir: %s}
links:
  - {name: wlan, match: "wlan*", class: wifi}
routes:
  - name: telemetry
    hosts: [telemetry.cloud.misaki]
    upstream: %s
    probe: {type: none}
    offline: {spool: true}
`, dir, up.URL)))
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var releaseOnce sync.Once
	defer releaseOnce.Do(func() { close(release) }) // a failed check must not leave the scan blocked
	var scans atomic.Int32
	scanner := func() ([]link.Interface, error) {
		if scans.Add(1) == 1 {
			<-release
		}
		return []link.Interface{{Name: "wlan0", Up: true, Running: true, Addrs: []string{"192.0.2.10/24"}}}, nil
	}
	s, err := New(cfg, slog.New(slog.DiscardHandler), Options{LinkScanner: scanner})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { releaseOnce.Do(func() { close(release) }); cancel(); <-done }()
	// Nothing to wait for but time: the replayer dispatches as it starts.
	time.Sleep(300 * time.Millisecond)
	if n := up.total(); n != 0 {
		t.Fatalf("the upstream saw %d requests before the first link scan", n)
	}
	releaseOnce.Do(func() { close(release) })
	waitfor.True(t, "the backlog delivered once wlan0 is seen", func() bool { return up.count("backlog") == 1 })
}

// A 409 with Retry-After (the gateway's answer while an earlier delivery of
// the same key is still in flight) is retried; a plain 409 is final.
func TestSpool409WithRetryAfterIsRetried(t *testing.T) {
	onEachServer(t, func(t *testing.T, srv http1Server) {
		var calls atomic.Int32
		up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("X-Req-Id") == "busy" && calls.Add(1) == 1 {
				w.Header().Set("Retry-After", "1")
				http.Error(w, "in flight", http.StatusConflict)
				return
			}
			if r.Header.Get("X-Req-Id") == "conflict" {
				http.Error(w, "version conflict", http.StatusConflict)
				return
			}
			fmt.Fprint(w, "ok")
		})
		p := srv.start(t, spoolYAML(t.TempDir(), up.URL, ""), false)
		p.offline(t)
		_, busy := p.spoolOne(t, "busy", nil, nil)
		_, conflict := p.spoolOne(t, "conflict", nil, nil)
		p.setLink(t, "wlan", "up")
		if m := waitState(t, busy, "delivered"); m["attempts"] != 2.0 {
			t.Fatalf("busy: %v", m)
		}
		if m := waitState(t, conflict, "failed"); m["attempts"] != 1.0 {
			t.Fatalf("conflict: %v", m)
		}
	})
}
