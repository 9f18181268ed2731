package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A batch whose answers together exceed what the edge keeps for them
// (offline.batch × spool.maxResponseBytes, plus 1 MiB) is delivered again
// one request at a time, each answer cut and kept: not retried as a batch
// until its TTL.
func TestBatchAnswerTooLargeGoesOneByOne(t *testing.T) {
	pki := writePKI(t)
	big := strings.Repeat("a", 300<<10)
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, big)
	}))
	defer svc.Close()
	gw := startProxyBinary(t, pki.GatewayYAML(t.TempDir(), svc.URL))
	edge := startProxyBinary(t, edgeToGatewayYAML(t.TempDir(), "maxResponseBytes: 16KiB, replay: {backoff: {initial: 10ms, max: 100ms}}", gw.mesh, pki, 8))

	setLinkHTTP(t, edge.admin, "wlan", "down")
	var locations []string
	for i := range 8 {
		req, _ := http.NewRequest(http.MethodPost, "http://"+edge.mesh+"/v1/events", strings.NewReader(fmt.Sprint(i)))
		req.Host = "telemetry.cloud.misaki"
		req.Header.Set("Prefer", "respond-async")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("request %d: %d, want 202", i, resp.StatusCode)
		}
		locations = append(locations, resp.Header.Get("Location"))
	}
	setLinkHTTP(t, edge.admin, "wlan", "up")

	for _, loc := range locations {
		var st struct {
			State    string `json:"state"`
			Response *struct {
				Status    int    `json:"status"`
				Body      []byte `json:"body"`
				Truncated bool   `json:"truncated"`
			} `json:"response"`
		}
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			resp, err := http.Get(loc)
			if err != nil {
				t.Fatal(err)
			}
			json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			if st.State == "delivered" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: state %q after 15s, want delivered\nedge logs:\n%s", loc, st.State, edge.logs.String())
			}
		}
		if st.Response == nil || st.Response.Status != 200 || !st.Response.Truncated || len(st.Response.Body) != 16<<10 {
			t.Fatalf("%s: the answer kept is %+v, want 200 cut at 16 KiB", loc, st.Response)
		}
	}
	// The requests went as a batch first: without batching they would
	// have been delivered one by one from the start, and kept alike.
	if n := metric(t, gw.admin, "misaki_gateway_batches_total"); n < 1 {
		t.Fatalf("the gateway took %v batches, want at least 1", n)
	}
}

// metric returns the value of an unlabelled metric on admin's /metrics.
func metric(t *testing.T, admin, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			return f
		}
	}
	t.Fatalf("no %s on http://%s/metrics", name, admin)
	return 0
}
