package vehicle_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/misaki-io/misaki/internal/demo/upstream"
	"github.com/misaki-io/misaki/internal/demo/vehicle"
)

// fakeProxy answers by sequence number, in turn: direct, held, 503 with
// Retry-After, 500, a dropped connection, a 2xx without Misaki-Delivery, and
// a direct answer echoing the wrong seq.
func fakeProxy(t *testing.T) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.Host != "telemetry.test" {
			t.Errorf("Host = %q", r.Host)
		}
		seq := r.Header.Get(upstream.SeqHeader)
		n, err := strconv.Atoi(seq)
		if err != nil {
			t.Errorf("bad %s %q", upstream.SeqHeader, seq)
			return
		}
		reply := func(delivery, echo string) {
			if delivery != "" {
				w.Header().Set(vehicle.DeliveryHeader, delivery)
			}
			json.NewEncoder(w).Encode(upstream.Reply{Seq: echo, Count: 1})
		}
		switch n % 7 {
		case 1:
			reply("direct", seq)
		case 2:
			time.Sleep(20 * time.Millisecond) // a held request takes a while
			reply("held", seq)
		case 3:
			w.Header().Set("Retry-After", "8")
			http.Error(w, "no usable link", http.StatusServiceUnavailable)
		case 4:
			http.Error(w, "boom", http.StatusInternalServerError)
		case 5:
			conn, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Error(err)
				return
			}
			conn.Close()
		case 6:
			reply("", seq)
		case 0:
			reply("direct", "999999")
		}
	}))
}

func TestClassifiesAnswers(t *testing.T) {
	srv := fakeProxy(t)
	defer srv.Close()
	statsFile := filepath.Join(t.TempDir(), "stats.json")
	app, err := vehicle.New(vehicle.Config{
		Proxy:     srv.Listener.Addr().String(),
		Host:      "telemetry.test",
		Rate:      200,
		Duration:  345 * time.Millisecond, // about 70 requests, 10 of each kind
		StatsFile: statsFile,
		Timeout:   5 * time.Second,
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := app.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	got, err := vehicle.ReadStats(statsFile)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Done || got.InFlight != 0 {
		t.Errorf("done=%v inFlight=%d, want done with nothing in flight", got.Done, got.InFlight)
	}
	if got.Sent < 14 {
		t.Fatalf("sent only %d requests", got.Sent)
	}
	// Count what each kind should have from the seqs that were sent.
	var want [7]int64
	for seq := int64(1); seq <= got.Sent; seq++ {
		want[seq%7]++
	}
	for _, c := range []struct {
		name      string
		got, want int64
	}{
		{"direct", got.Direct, want[1]},
		{"held", got.Held, want[2]},
		{"failed", got.Failed, want[3] + want[4]},
		{"failed 503", got.FailedByStatus["503"], want[3]},
		{"failed 500", got.FailedByStatus["500"], want[4]},
		{"503 with Retry-After", got.RetryAfter, want[3]},
		{"lost", got.Lost, want[5]},
		{"bad", got.Bad, want[6] + want[0]},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d (sent %d)", c.name, c.got, c.want, got.Sent)
		}
	}
	if got.MaxHeldWait < 20*time.Millisecond {
		t.Errorf("max held wait %v, want at least 20ms", got.MaxHeldWait)
	}
	if got.FirstFailedSent.IsZero() || got.LastFailedSent.Before(got.FirstFailedSent) {
		t.Errorf("failed sent between %v and %v", got.FirstFailedSent, got.LastFailedSent)
	}
	if len(got.LostErrors) == 0 || len(got.BadAnswers) == 0 {
		t.Errorf("no samples of lost (%q) or bad (%q) answers", got.LostErrors, got.BadAnswers)
	}
}

func TestConfigValidate(t *testing.T) {
	for name, cfg := range map[string]vehicle.Config{
		"no proxy":    {Host: "h", Duration: time.Second},
		"no host":     {Proxy: "127.0.0.1:1", Duration: time.Second},
		"no duration": {Proxy: "127.0.0.1:1", Host: "h"},
		"rate":        {Proxy: "127.0.0.1:1", Host: "h", Duration: time.Second, Rate: -1},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := vehicle.New(cfg, slog.New(slog.DiscardHandler)); err == nil {
				t.Error("New accepted an invalid config")
			}
		})
	}
}
