package test

import (
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/misaki-io/misaki/internal/devpki"
	"github.com/misaki-io/misaki/internal/waitfor"
)

func writePKI(t *testing.T) devpki.Files {
	t.Helper()
	f, err := devpki.Write(t.TempDir(), "VIN-CRASH-TEST")
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestSpoolThroughSIGKILL spools requests through the real edge binary,
// and kills it with SIGKILL at random moments, while it takes requests
// (enqueue and fsync) and while it replays its backlog through the real
// gateway binary. In the end every request the edge acknowledged (202, or
// 200 when it was online) has reached the service exactly once, and no
// request reached it twice. MISAKI_CRASH_KILLS sets the number of kills
// (default 50; make test-soak runs more). MISAKI_CRASH_SEED replays a run:
// the test logs at its start the seed that picks each kill's moment, 0–39
// ms into its burst of 16 requests. The same seed and MISAKI_CRASH_KILLS
// give the same schedule: the same bursts, offline and online in turn, in
// the same replay configs, each killed as long after it started (how far
// the processes got by then is theirs).
func TestSpoolThroughSIGKILL(t *testing.T) {
	kills := 50
	if v, err := strconv.Atoi(os.Getenv("MISAKI_CRASH_KILLS")); err == nil && v > 0 {
		kills = v
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("MISAKI_CRASH_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("MISAKI_CRASH_SEED=%q: want a decimal uint64: %v", v, err)
		}
	}
	t.Logf("seed %d: replay with MISAKI_CRASH_SEED=%d MISAKI_CRASH_KILLS=%d", seed, seed, kills)
	killAfter := killSchedule(seed, kills)
	pki := writePKI(t)

	var mu sync.Mutex
	seen := map[string]int{}
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		seen[r.Header.Get("Idempotency-Key")]++
		mu.Unlock()
		io.WriteString(w, "stored")
	}))
	defer svc.Close()

	gw := startProxyBinary(t, pki.GatewayYAML(t.TempDir(), svc.URL))

	spoolDir := t.TempDir()
	// Runs alternate between delivering one request per exchange and in
	// batches of 8 (offline.batch), on the same spool.
	replay := "replay: {concurrency: 8, backoff: {initial: 10ms, max: 200ms}}"
	edgeCfgs := [2]string{
		edgeToGatewayYAML(spoolDir, replay, gw.mesh, pki, 0),
		edgeToGatewayYAML(spoolDir, replay, gw.mesh, pki, 8),
	}

	acked := map[string]bool{}
	sent := 0
	client := &http.Client{Timeout: 5 * time.Second}
	for kill := range kills {
		edge := startProxyBinary(t, edgeCfgs[kill/2%2])
		offline := kill%2 == 0
		if offline {
			setLinkHTTP(t, edge.admin, "wlan", "down")
		}
		// A burst of requests, and the kill somewhere inside it: during
		// enqueue and fsync when offline, beside the replay when online.
		var wg sync.WaitGroup
		var amu sync.Mutex
		for j := range 16 {
			key := fmt.Sprintf("k%03d-%02d", kill, j)
			sent++
			wg.Go(func() {
				req, _ := http.NewRequest(http.MethodPost, "http://"+edge.mesh+"/v1/events", strings.NewReader(`{"key":"`+key+`"}`))
				req.Host = "telemetry.cloud.misaki"
				req.Header.Set("Idempotency-Key", key)
				resp, err := client.Do(req)
				if err != nil {
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusAccepted || resp.StatusCode == http.StatusOK {
					amu.Lock()
					acked[key] = true
					amu.Unlock()
				}
			})
		}
		time.Sleep(killAfter[kill])
		edge.cmd.Process.Kill()
		edge.cmd.Wait()
		wg.Wait()
	}

	// A last start, online: the backlog drains through the gateway.
	edge := startProxyBinary(t, edgeCfgs[1])
	setLinkHTTP(t, edge.admin, "wlan", "up")
	waitfor.True(t, "the spool to drain", func() bool {
		resp, err := http.Get("http://" + edge.admin + "/v1/spool")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var sp struct {
			Routes []struct {
				Depth int64 `json:"depth"`
			} `json:"routes"`
		}
		json.NewDecoder(resp.Body).Decode(&sp)
		for _, r := range sp.Routes {
			if r.Depth > 0 {
				return false
			}
		}
		return true
	})

	// The last start delivers in batches of 8 (and half the earlier ones
	// did): the gateway must have taken some.
	if n := metric(t, gw.admin, "misaki_gateway_batches_total"); n < 1 {
		t.Errorf("the gateway took %v batches, want at least 1", n)
	}

	mu.Lock()
	defer mu.Unlock()
	lost, dup := 0, 0
	for key := range acked {
		if seen[key] == 0 {
			lost++
			t.Errorf("acknowledged request %s never reached the service", key)
		}
	}
	for key, n := range seen {
		if n > 1 {
			dup++
			t.Errorf("request %s reached the service %d times", key, n)
		}
	}
	t.Logf("%d kills: %d requests sent, %d acknowledged, %d reached the service; lost %d, duplicated %d",
		kills, sent, len(acked), len(seen), lost, dup)
	if len(acked) == 0 {
		t.Fatal("no request was acknowledged: the test tested nothing")
	}
}

// killSchedule is how long after each burst starts its kill comes: a
// function of the seed alone, drawn before the run, so that nothing the
// run does shifts it.
func killSchedule(seed uint64, kills int) []time.Duration {
	rng := mrand.New(mrand.NewPCG(seed, 7))
	after := make([]time.Duration, kills)
	for i := range after {
		after[i] = time.Duration(rng.IntN(40)) * time.Millisecond
	}
	return after
}

func setLinkHTTP(t *testing.T, admin, name, state string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, "http://"+admin+"/v1/links/"+name, strings.NewReader(`{"state":"`+state+`"}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("PUT link: %d", resp.StatusCode)
	}
}

// edgeToGatewayYAML configures an edge whose route telemetry spools into
// spoolDir (with spoolExtra, YAML flow fields, in spool:) and delivers
// through the gateway at gwAddr over mutual TLS, batch requests per
// exchange.
func edgeToGatewayYAML(spoolDir, spoolExtra, gwAddr string, pki devpki.Files, batch int) string {
	return fmt.Sprintf(`
listen: 127.0.0.1:0
admin: 127.0.0.1:0
links:
  - {name: wlan, class: wifi}
spool: {dir: %s, %s}
routes:
  - name: telemetry
    hosts: [telemetry.cloud.misaki]
    upstream: https://%s
    tls: {caFile: %s, certFile: %s, keyFile: %s}
    probe: {type: none}
    offline: {spool: true, batch: %d}
`, spoolDir, spoolExtra, gwAddr, pki.CA, pki.ClientCert, pki.ClientKey, batch)
}
