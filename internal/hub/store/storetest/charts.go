package storetest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/store"
)

func testPing(t *testing.T, s store.Store) {
	must(t, "ping", s.Ping(t.Context()))
}

func testSources(t *testing.T, s store.Store) {
	ctx := t.Context()
	srcs := []hubv1.ChartSource{
		{Name: "zoo", Type: hubv1.SourceOCI, URL: "oci://127.0.0.1:5000/charts", Charts: []string{"a", "b"},
			PlainHTTP: true, Created: at(0)},
		{Name: "alpha", Type: hubv1.SourceHTTP, URL: "https://charts.example/", CAFile: "/etc/ca.pem",
			InsecureSkipTLSVerify: true, Created: at(1)},
		{Name: "local", Type: hubv1.SourceLocal, URL: "/srv/charts", Charts: []string{}, Created: at(2)},
	}
	for _, src := range srcs {
		must(t, "create "+src.Name, s.CreateSource(ctx, src))
	}
	want := make(map[string]hubv1.ChartSource)
	for _, src := range srcs {
		src.Created = stored(src.Created)
		want[src.Name] = src
	}
	for name, w := range want {
		got, err := s.GetSource(ctx, name)
		must(t, "get "+name, err)
		if d := diff(w, got); d != "" {
			t.Errorf("get %s (-want +got):\n%s", name, d)
		}
	}
	list, err := s.ListSources(ctx)
	must(t, "list", err)
	if d := diff([]hubv1.ChartSource{want["alpha"], want["local"], want["zoo"]}, list); d != "" {
		t.Errorf("list (-want +got):\n%s", d)
	}

	dup := srcs[0]
	dup.URL = "oci://elsewhere"
	wantErr(t, "create taken name", s.CreateSource(ctx, dup), store.ErrExists)
	if got, _ := s.GetSource(ctx, dup.Name); got.URL != srcs[0].URL {
		t.Errorf("a refused create changed the source: URL %q", got.URL)
	}
	_, err = s.GetSource(ctx, "missing")
	wantErr(t, "get missing", err, store.ErrNotFound)
	wantErr(t, "delete missing", s.DeleteSource(ctx, "missing"), store.ErrNotFound)
	must(t, "delete", s.DeleteSource(ctx, "zoo"))
	_, err = s.GetSource(ctx, "zoo")
	wantErr(t, "get deleted", err, store.ErrNotFound)
	wantErr(t, "delete again", s.DeleteSource(ctx, "zoo"), store.ErrNotFound)
	list, err = s.ListSources(ctx)
	must(t, "list", err)
	if len(list) != 2 {
		t.Errorf("after delete: %d sources, want 2", len(list))
	}
}

func testPins(t *testing.T, s store.Store) {
	ctx := t.Context()
	must(t, "create source", s.CreateSource(ctx, hubv1.ChartSource{Name: "repo", Type: hubv1.SourceHTTP, URL: "http://x", Created: at(0)}))
	d1, d2 := "sha256:"+strings.Repeat("a", 64), "sha256:"+strings.Repeat("b", 64)
	ref := hubv1.ChartRef{Source: "repo", Name: "shuttle", Version: "1.2.3", Digest: d1}

	_, err := s.GetPin(ctx, "repo", "shuttle", "1.2.3")
	wantErr(t, "get before pin", err, store.ErrNotFound)
	must(t, "pin", s.PinChart(ctx, ref))
	must(t, "pin the same digest again", s.PinChart(ctx, ref))

	other := ref
	other.Digest = d2
	err = s.PinChart(ctx, other)
	wantErr(t, "pin another digest", err, store.ErrDigestMismatch)
	if !strings.Contains(err.Error(), d1) || !strings.Contains(err.Error(), d2) {
		t.Errorf("mismatch error %q does not name both digests", err)
	}
	got, err := s.GetPin(ctx, "repo", "shuttle", "1.2.3")
	must(t, "get pin", err)
	if got != d1 {
		t.Errorf("pin = %s after a refused re-pin, want %s", got, d1)
	}

	// Other versions, names and sources are pinned on their own.
	for _, r := range []hubv1.ChartRef{
		{Source: "repo", Name: "shuttle", Version: "1.2.4", Digest: d2},
		{Source: "repo", Name: "other", Version: "1.2.3", Digest: d2},
		{Source: "mirror", Name: "shuttle", Version: "1.2.3", Digest: d2},
	} {
		must(t, "pin "+r.Source+"/"+r.Name+"@"+r.Version, s.PinChart(ctx, r))
		if got, err := s.GetPin(ctx, r.Source, r.Name, r.Version); err != nil || got != d2 {
			t.Errorf("get pin %v = %q, %v; want %s", r, got, err, d2)
		}
	}

	// A pin outlives its source: a source added again under the same name
	// must still serve the pinned bytes.
	must(t, "delete source", s.DeleteSource(ctx, "repo"))
	if got, err := s.GetPin(ctx, "repo", "shuttle", "1.2.3"); err != nil || got != d1 {
		t.Errorf("pin after the source was deleted = %q, %v; want %s", got, err, d1)
	}
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func testBlobs(t *testing.T, s store.Store) {
	ctx := t.Context()
	chart := bytes.Repeat([]byte("chart archive \x00\xff"), 1000)
	empty := []byte{}
	for _, b := range [][]byte{chart, empty} {
		d := digestOf(b)
		_, err := s.GetBlob(ctx, d)
		wantErr(t, "get before put", err, store.ErrNotFound)
		must(t, "put", s.PutBlob(ctx, d, b))
		must(t, "put again", s.PutBlob(ctx, d, b))
		got, err := s.GetBlob(ctx, d)
		must(t, "get", err)
		if !bytes.Equal(got, b) {
			t.Errorf("get %s: %d bytes, want %d", d, len(got), len(b))
		}
	}
	err := s.PutBlob(ctx, digestOf([]byte("other")), chart)
	wantErr(t, "put under another digest", err, store.ErrDigestMismatch)
	if !strings.Contains(err.Error(), digestOf(chart)) || !strings.Contains(err.Error(), digestOf([]byte("other"))) {
		t.Errorf("mismatch error %q does not name both digests", err)
	}
	_, err = s.GetBlob(ctx, digestOf([]byte("other")))
	wantErr(t, "get refused blob", err, store.ErrNotFound)
	if err := s.PutBlob(ctx, "md5:abc", chart); err == nil {
		t.Error("put under a malformed digest: no error")
	}
}
