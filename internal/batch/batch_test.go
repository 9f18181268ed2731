package batch

import (
	"bytes"
	"errors"
	"net/http"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	reqs := []Item{
		{Method: "POST", Target: "/v1/t?a=1", Host: "telemetry.cloud.misaki", Header: http.Header{"Idempotency-Key": {"k1"}, "X-A": {"1", "2"}}, Body: []byte("body\r\n--not a boundary\r\n")},
		{Method: "GET", Target: "/", Host: "h", Header: nil},
	}
	var buf bytes.Buffer
	ct, err := Write(&buf, reqs)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Read(&buf, ct, true, 1<<20)
	if err != nil || len(got) != 2 {
		t.Fatalf("Read: %d items, %v", len(got), err)
	}
	if g := got[0]; g.Method != "POST" || g.Target != "/v1/t?a=1" || g.Host != "telemetry.cloud.misaki" ||
		g.Header.Get("Idempotency-Key") != "k1" || len(g.Header["X-A"]) != 2 || string(g.Body) != string(reqs[0].Body) {
		t.Fatalf("item 0: %+v", g)
	}
	if r := got[0].Request(); r.URL.RequestURI() != "/v1/t?a=1" || r.Host != "telemetry.cloud.misaki" || r.ContentLength != int64(len(reqs[0].Body)) {
		t.Fatalf("Request: %v %q %d", r.URL, r.Host, r.ContentLength)
	}
	if got[1].Method != "GET" || len(got[1].Body) != 0 {
		t.Fatalf("item 1: %+v", got[1])
	}

	resps := []Item{{Status: 201, Header: http.Header{"Misaki-Replayed": {"true"}}, Body: []byte("ok")}, {Status: 422}}
	buf.Reset()
	if ct, err = Write(&buf, resps); err != nil {
		t.Fatal(err)
	}
	got, err = Read(&buf, ct, false, 1<<20)
	if err != nil || len(got) != 2 || got[0].Status != 201 || string(got[0].Body) != "ok" || got[0].Header.Get("Misaki-Replayed") != "true" || got[1].Status != 422 {
		t.Fatalf("responses: %+v %v", got, err)
	}
}

func TestRefusals(t *testing.T) {
	var buf bytes.Buffer
	ct, _ := Write(&buf, []Item{{Method: "POST", Target: "/", Host: "h", Body: bytes.Repeat([]byte("x"), 1000)}})
	body := buf.String()
	if _, err := Read(strings.NewReader(body), "application/json", true, 1<<20); !errors.Is(err, ErrFormat) {
		t.Errorf("not multipart: %v", err)
	}
	if _, err := Read(strings.NewReader(body), ct, false, 1<<20); !errors.Is(err, ErrFormat) {
		t.Errorf("requests read as responses: %v", err)
	}
	if _, err := Read(strings.NewReader(body), ct, true, 500); err == nil || !strings.Contains(err.Error(), "larger than 500 bytes") {
		t.Errorf("too large: %v", err)
	}
	many := make([]Item, MaxItems+1)
	for i := range many {
		many[i] = Item{Method: "GET", Target: "/", Host: "h"}
	}
	buf.Reset()
	ct, _ = Write(&buf, many)
	if _, err := Read(&buf, ct, true, 1<<20); err == nil || !strings.Contains(err.Error(), "more than 256 items") {
		t.Errorf("too many items: %v", err)
	}
}

func FuzzRead(f *testing.F) {
	var buf bytes.Buffer
	ct, _ := Write(&buf, []Item{{Method: "POST", Target: "/a", Host: "h", Body: []byte("b")}})
	f.Add(buf.Bytes(), strings.TrimPrefix(ct, "multipart/mixed; boundary="))
	f.Fuzz(func(t *testing.T, body []byte, boundary string) {
		Read(bytes.NewReader(body), "multipart/mixed; boundary="+boundary, true, 1<<16) // must not panic
		Read(bytes.NewReader(body), "multipart/mixed; boundary="+boundary, false, 1<<16)
	})
}
