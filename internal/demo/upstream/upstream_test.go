package upstream_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/misaki-io/misaki/internal/demo/upstream"
)

func TestCountsBySeq(t *testing.T) {
	s := upstream.New()
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()

	post := func(seq string) (int, upstream.Reply) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/telemetry", strings.NewReader(`{"x":1}`))
		if seq != "" {
			req.Header.Set(upstream.SeqHeader, seq)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r upstream.Reply
		if resp.StatusCode == http.StatusOK {
			if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
				t.Fatal(err)
			}
		} else {
			io.Copy(io.Discard, resp.Body)
		}
		return resp.StatusCode, r
	}
	for _, tc := range []struct {
		seq       string
		wantCode  int
		wantCount int
	}{
		{"1", 200, 1},
		{"2", 200, 1},
		{"1", 200, 2},
		{"", 400, 0},
	} {
		code, r := post(tc.seq)
		if code != tc.wantCode || r.Count != tc.wantCount || (code == 200 && r.Seq != tc.seq) {
			t.Errorf("seq %q: %d %+v, want %d with count %d", tc.seq, code, r, tc.wantCode, tc.wantCount)
		}
	}

	resp, err := http.Get(srv.URL + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st upstream.Stats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if want := (upstream.Stats{Received: 3, Unique: 2, Duplicates: 1}); st != want {
		t.Errorf("GET /stats = %+v, want %+v", st, want)
	}
}
