package catalog_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/deadaddr"
	"github.com/misaki-io/misaki/internal/hub/catalog"
	"github.com/misaki-io/misaki/internal/hub/catalog/catalogtest"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// chartCopy copies the shuttle chart to a new directory, sets its version
// and applies edits (old → new) to its files.
func chartCopy(t *testing.T, version string, edits map[string][2]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "shuttle")
	if err := os.CopyFS(dir, os.DirFS(catalogtest.ShuttleChart(t))); err != nil {
		t.Fatal(err)
	}
	edit(t, filepath.Join(dir, "Chart.yaml"), "version: 1.0.0", "version: "+version)
	for file, e := range edits {
		edit(t, filepath.Join(dir, file), e[0], e[1])
	}
	return dir
}

func edit(t *testing.T, path, old, new string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("%s has no %q", path, old)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(b), old, new, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
}

func fileDigest(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func newCatalog(t *testing.T, opts catalog.Options) *catalog.Catalog {
	t.Helper()
	if opts.CacheDir == "" {
		opts.CacheDir = t.TempDir()
	}
	c := catalog.New(opts)
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	return c
}

const shuttleDesc = "Autonomous shuttle services - a light route API and a heavy path planner"

func shuttleSchema(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(catalogtest.ShuttleChart(t), "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkArchive checks what every Fetch of a shuttle version must give.
func checkArchive(t *testing.T, a *catalog.Archive, source, version string) {
	t.Helper()
	if a.Source != source || a.Name != "shuttle" || a.Version != version {
		t.Errorf("archive is %s/%s %s, want %s/shuttle %s", a.Source, a.Name, a.Version, source, version)
	}
	sum := sha256.Sum256(a.Data)
	if want := "sha256:" + hex.EncodeToString(sum[:]); a.Digest != want {
		t.Errorf("Digest = %s, sha256 of Data is %s", a.Digest, want)
	}
	if a.Chart == nil || a.Chart.Metadata.Version != version || len(a.Chart.Templates) == 0 {
		t.Errorf("chart not loaded: %+v", a.Chart)
	}
	if string(a.ValuesSchema) != shuttleSchema(t) {
		t.Errorf("ValuesSchema = %s, want the chart's values.schema.json", a.ValuesSchema)
	}
	ch, err := catalog.Load(a.Data)
	if err != nil {
		t.Fatalf("Load(Data): %v", err)
	}
	if ch.Metadata.Name != "shuttle" || ch.Metadata.Version != version {
		t.Errorf("Load(Data) = %s %s", ch.Metadata.Name, ch.Metadata.Version)
	}
}

func TestHTTPRepository(t *testing.T) {
	ctx := t.Context()
	r := catalogtest.NewRepo(t)
	r.Add(t, catalogtest.ShuttleChart(t), chartCopy(t, "1.10.0", nil), chartCopy(t, "1.2.0", map[string][2]string{
		"Chart.yaml": {`appVersion: "2.4.1"`, `appVersion: "2.5.0"`},
	}))
	src := hubv1.ChartSource{Name: "fleet", Type: hubv1.SourceHTTP, URL: r.URL}
	c := newCatalog(t, catalog.Options{})

	if err := c.Check(ctx, src); err != nil {
		t.Fatalf("Check: %v", err)
	}
	got, err := c.List(ctx, src)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	ver := func(v, app string) hubv1.ChartVersion {
		return hubv1.ChartVersion{
			Source: "fleet", Name: "shuttle", Version: v, AppVersion: app, Description: shuttleDesc,
			Digest: fileDigest(t, filepath.Join(r.Dir, "shuttle-"+v+".tgz")),
		}
	}
	want := []hubv1.Chart{{Source: "fleet", Name: "shuttle", Versions: []hubv1.ChartVersion{
		ver("1.10.0", "2.4.1"), ver("1.2.0", "2.5.0"), ver("1.0.0", "2.4.1"),
	}}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}

	a, err := c.Fetch(ctx, src, "shuttle", "1.2.0")
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	checkArchive(t, a, "fleet", "1.2.0")
	served, _ := os.ReadFile(filepath.Join(r.Dir, "shuttle-1.2.0.tgz"))
	if string(a.Data) != string(served) {
		t.Error("Fetch's Data are not the bytes the repository serves")
	}
	if diff := cmp.Diff(want[0].Versions[1], withoutSchema(a.ChartVersion())); diff != "" {
		t.Errorf("Archive.ChartVersion (-want +got):\n%s", diff)
	}

	for _, tc := range []struct{ name, chart, version string }{
		{"unknown version", "shuttle", "9.9.9"},
		{"unknown chart", "ferry", "1.0.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Fetch(ctx, src, tc.chart, tc.version)
			if !errors.Is(err, catalog.ErrNotFound) {
				t.Fatalf("Fetch(%s %s) = %v, want ErrNotFound", tc.chart, tc.version, err)
			}
			if !strings.Contains(err.Error(), tc.chart) || !strings.Contains(err.Error(), "fleet") {
				t.Errorf("error %q does not name the chart and source", err)
			}
		})
	}
}

func withoutSchema(v hubv1.ChartVersion) hubv1.ChartVersion {
	v.ValuesSchema = nil
	return v
}

func TestOCIRegistry(t *testing.T) {
	ctx := t.Context()
	host := catalogtest.ServeRegistry(t)
	_, d100 := catalogtest.PushChart(t, host, "charts", catalogtest.ShuttleChart(t))
	_, d110 := catalogtest.PushChart(t, host, "charts", chartCopy(t, "1.1.0", map[string][2]string{
		"Chart.yaml": {`appVersion: "2.4.1"`, `appVersion: "2.5.0"`},
	}))
	src := hubv1.ChartSource{Name: "registry", Type: hubv1.SourceOCI, URL: "oci://" + host + "/charts", Charts: []string{"shuttle"}, PlainHTTP: true}
	c := newCatalog(t, catalog.Options{})

	if err := c.Check(ctx, src); err != nil {
		t.Fatalf("Check: %v", err)
	}
	got, err := c.List(ctx, src)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	want := []hubv1.Chart{{Source: "registry", Name: "shuttle", Versions: []hubv1.ChartVersion{
		{Source: "registry", Name: "shuttle", Version: "1.1.0", AppVersion: "2.5.0", Description: shuttleDesc, Digest: d110},
		{Source: "registry", Name: "shuttle", Version: "1.0.0", AppVersion: "2.4.1", Description: shuttleDesc, Digest: d100},
	}}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}

	a, err := c.Fetch(ctx, src, "shuttle", "1.0.0")
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	checkArchive(t, a, "registry", "1.0.0")
	if a.Digest != d100 {
		t.Errorf("Fetch digest %s, pushed %s", a.Digest, d100)
	}

	for _, tc := range []struct{ name, chart, version string }{
		{"unknown tag", "shuttle", "9.9.9"},
		{"chart the source does not list", "ferry", "1.0.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Fetch(ctx, src, tc.chart, tc.version)
			if !errors.Is(err, catalog.ErrNotFound) {
				t.Fatalf("Fetch(%s %s) = %v, want ErrNotFound", tc.chart, tc.version, err)
			}
		})
	}

	t.Run("chart not in the registry", func(t *testing.T) {
		missing := src
		missing.Charts = []string{"shuttle", "ferry"}
		err := c.Check(ctx, missing)
		if err == nil || !strings.Contains(err.Error(), "chart ferry") {
			t.Fatalf("Check = %v, want an error naming chart ferry", err)
		}
	})
}

func TestLocalSource(t *testing.T) {
	ctx := t.Context()
	root := t.TempDir()
	dir := filepath.Join(root, "charts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	unpacked := filepath.Join(dir, "shuttle")
	if err := os.CopyFS(unpacked, os.DirFS(catalogtest.ShuttleChart(t))); err != nil {
		t.Fatal(err)
	}
	tgz := catalogtest.Package(t, chartCopy(t, "1.1.0", nil), dir)
	if err := os.WriteFile(filepath.Join(dir, "README.md"), []byte("not a chart"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := newCatalog(t, catalog.Options{})
	src := hubv1.ChartSource{Name: "disk", Type: hubv1.SourceLocal, URL: dir}

	if err := c.Check(ctx, src); err != nil {
		t.Fatalf("Check: %v", err)
	}
	a1, err := c.Fetch(ctx, src, "shuttle", "1.0.0")
	if err != nil {
		t.Fatalf("Fetch unpacked: %v", err)
	}
	checkArchive(t, a1, "disk", "1.0.0")

	// Touching every file changes no byte of the package.
	later := time.Now().Add(time.Hour)
	if err := filepath.Walk(unpacked, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Chtimes(p, later, later)
	}); err != nil {
		t.Fatal(err)
	}
	a2, err := catalog.New(catalog.Options{CacheDir: t.TempDir()}).Fetch(ctx, src, "shuttle", "1.0.0")
	if err != nil {
		t.Fatalf("Fetch unpacked again: %v", err)
	}
	if a1.Digest != a2.Digest || string(a1.Data) != string(a2.Data) {
		t.Errorf("two packages of one directory differ: %s, %s", a1.Digest, a2.Digest)
	}
	direct, err := catalog.PackageDir(unpacked)
	if err != nil {
		t.Fatal(err)
	}
	if catalog.Digest(direct) != a1.Digest {
		t.Errorf("PackageDir digest %s, Fetch %s", catalog.Digest(direct), a1.Digest)
	}

	// A changed file does change it.
	edit(t, filepath.Join(unpacked, "values.yaml"), "logLevel: info", "logLevel: debug")
	a3, err := c.Fetch(ctx, src, "shuttle", "1.0.0")
	if err != nil {
		t.Fatalf("Fetch edited: %v", err)
	}
	if a3.Digest == a1.Digest {
		t.Error("an edited chart packs to the same digest")
	}

	at, err := c.Fetch(ctx, src, "shuttle", "1.1.0")
	if err != nil {
		t.Fatalf("Fetch tgz: %v", err)
	}
	checkArchive(t, at, "disk", "1.1.0")
	if at.Digest != fileDigest(t, tgz) {
		t.Errorf("Fetch of a .tgz: digest %s, the file's %s", at.Digest, fileDigest(t, tgz))
	}

	got, err := c.List(ctx, src)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	want := []hubv1.Chart{{Source: "disk", Name: "shuttle", Versions: []hubv1.ChartVersion{
		{Source: "disk", Name: "shuttle", Version: "1.1.0", AppVersion: "2.4.1", Description: shuttleDesc, Digest: at.Digest},
		{Source: "disk", Name: "shuttle", Version: "1.0.0", AppVersion: "2.4.1", Description: shuttleDesc, Digest: a3.Digest},
	}}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}

	for _, tc := range []struct {
		name, url, version, digest string
	}{
		{"one tgz", tgz, "1.1.0", at.Digest},
		{"one tgz as a file URL", "file://" + tgz, "1.1.0", at.Digest},
		{"one chart directory", unpacked, "1.0.0", a3.Digest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := hubv1.ChartSource{Name: "one", Type: hubv1.SourceLocal, URL: tc.url}
			if err := c.Check(ctx, src); err != nil {
				t.Fatalf("Check: %v", err)
			}
			got, err := c.List(ctx, src)
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			if len(got) != 1 || len(got[0].Versions) != 1 || got[0].Versions[0].Version != tc.version {
				t.Fatalf("List = %+v, want shuttle %s alone", got, tc.version)
			}
			a, err := c.Fetch(ctx, src, "shuttle", tc.version)
			if err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			if a.Digest != tc.digest {
				t.Errorf("digest %s, want %s", a.Digest, tc.digest)
			}
		})
	}

	t.Run("two entries with one version", func(t *testing.T) {
		catalogtest.Package(t, unpacked, dir) // shuttle-1.0.0.tgz beside shuttle/
		_, err := c.List(ctx, src)
		if err == nil || !strings.Contains(err.Error(), "shuttle 1.0.0 is both") {
			t.Fatalf("List = %v, want an error naming the duplicate", err)
		}
		if err := os.Remove(filepath.Join(dir, "shuttle-1.0.0.tgz")); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("outside the local roots", func(t *testing.T) {
		confined := newCatalog(t, catalog.Options{LocalRoots: []string{t.TempDir()}})
		err := confined.Check(ctx, src)
		var fe *catalog.FieldError
		if !errors.As(err, &fe) || fe.Field != "url" {
			t.Fatalf("Check = %v, want a FieldError on url", err)
		}
		inside := newCatalog(t, catalog.Options{LocalRoots: []string{root}})
		if err := inside.Check(ctx, src); err != nil {
			t.Fatalf("Check under the root: %v", err)
		}
	})
}

// A source that changes a published version's bytes: the fetch succeeds
// (the index agrees with the new bytes), and VerifyPinned refuses them.
func TestChangedBytesRefused(t *testing.T) {
	ctx := t.Context()
	c := newCatalog(t, catalog.Options{})
	changed := chartCopy(t, "1.0.0", map[string][2]string{"values.yaml": {"logLevel: info", "logLevel: debug"}})

	r := catalogtest.NewRepo(t)
	r.Add(t, catalogtest.ShuttleChart(t))
	host := catalogtest.ServeRegistry(t)
	catalogtest.PushChart(t, host, "", catalogtest.ShuttleChart(t))

	for _, tc := range []struct {
		name      string
		src       hubv1.ChartSource
		republish func()
	}{
		{"http", hubv1.ChartSource{Name: "repo", Type: hubv1.SourceHTTP, URL: r.URL}, func() { r.Add(t, changed) }},
		{"oci", hubv1.ChartSource{Name: "reg", Type: hubv1.SourceOCI, URL: "oci://" + host, Charts: []string{"shuttle"}, PlainHTTP: true},
			func() { catalogtest.PushChart(t, host, "", changed) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pinned, err := c.Fetch(ctx, tc.src, "shuttle", "1.0.0")
			if err != nil {
				t.Fatal(err)
			}
			if err := catalog.VerifyPinned(pinned, tc.src.Name, "shuttle", "1.0.0", pinned.Digest); err != nil {
				t.Fatalf("VerifyPinned of the pinned bytes: %v", err)
			}
			if err := catalog.VerifyPinned(pinned, tc.src.Name, "shuttle", "1.0.0", ""); err != nil {
				t.Fatalf("VerifyPinned without a pin: %v", err)
			}
			tc.republish()
			now, err := c.Fetch(ctx, tc.src, "shuttle", "1.0.0")
			if err != nil {
				t.Fatal(err)
			}
			if now.Digest == pinned.Digest {
				t.Fatal("the republished version has the same digest; the test changes nothing")
			}
			err = catalog.VerifyPinned(now, tc.src.Name, "shuttle", "1.0.0", pinned.Digest)
			if !errors.Is(err, catalog.ErrDigestMismatch) {
				t.Fatalf("VerifyPinned = %v, want ErrDigestMismatch", err)
			}
			want := "chart shuttle 1.0.0 from source " + tc.src.Name + ": source now serves " + now.Digest + ", pinned " + pinned.Digest
			if !strings.HasPrefix(err.Error(), want) {
				t.Errorf("error %q\ndoes not start %q", err, want)
			}
		})
	}
}

// An archive whose bytes are not the digest its index lists is refused.
func TestIndexDigestMismatch(t *testing.T) {
	ctx := t.Context()
	r := catalogtest.NewRepo(t)
	r.Add(t, catalogtest.ShuttleChart(t))
	listed := fileDigest(t, filepath.Join(r.Dir, "shuttle-1.0.0.tgz"))
	// Replace the archive, not the index.
	other := catalogtest.Package(t, chartCopy(t, "1.0.0", map[string][2]string{"values.yaml": {"replicas: 1", "replicas: 2"}}), t.TempDir())
	b, err := os.ReadFile(other)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(r.Dir, "shuttle-1.0.0.tgz"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	served := catalog.Digest(b)

	c := newCatalog(t, catalog.Options{})
	_, err = c.Fetch(ctx, hubv1.ChartSource{Name: "repo", Type: hubv1.SourceHTTP, URL: r.URL}, "shuttle", "1.0.0")
	if !errors.Is(err, catalog.ErrDigestMismatch) {
		t.Fatalf("Fetch = %v, want ErrDigestMismatch", err)
	}
	for _, d := range []string{listed, served} {
		if !strings.Contains(err.Error(), d) {
			t.Errorf("error %q does not name %s", err, d)
		}
	}
}

func TestValidateSource(t *testing.T) {
	for _, tc := range []struct {
		name  string
		src   hubv1.ChartSource
		field string // "" when valid
	}{
		{"http", hubv1.ChartSource{Name: "fleet", Type: "http", URL: "https://charts.example.com/stable"}, ""},
		{"oci", hubv1.ChartSource{Name: "reg", Type: "oci", URL: "oci://ghcr.io/misaki-io/charts", Charts: []string{"shuttle", "beacon.v2"}}, ""},
		{"oci at the registry root", hubv1.ChartSource{Name: "reg", Type: "oci", URL: "oci://127.0.0.1:5000", Charts: []string{"shuttle"}}, ""},
		{"local path", hubv1.ChartSource{Name: "disk", Type: "local", URL: "/srv/charts"}, ""},
		{"local file URL", hubv1.ChartSource{Name: "disk", Type: "local", URL: "file:///srv/charts/shuttle-1.0.0.tgz"}, ""},
		{"no name", hubv1.ChartSource{Type: "http", URL: "https://x"}, "name"},
		{"name not a DNS label", hubv1.ChartSource{Name: "Fleet_1", Type: "http", URL: "https://x"}, "name"},
		{"no type", hubv1.ChartSource{Name: "a", URL: "https://x"}, "type"},
		{"unknown type", hubv1.ChartSource{Name: "a", Type: "git", URL: "https://x"}, "type"},
		{"no url", hubv1.ChartSource{Name: "a", Type: "http"}, "url"},
		{"http with an oci url", hubv1.ChartSource{Name: "a", Type: "http", URL: "oci://ghcr.io/x"}, "url"},
		{"http without host", hubv1.ChartSource{Name: "a", Type: "http", URL: "http:///charts"}, "url"},
		{"http index.yaml", hubv1.ChartSource{Name: "a", Type: "http", URL: "https://x/charts/index.yaml"}, "url"},
		{"http unparsable", hubv1.ChartSource{Name: "a", Type: "http", URL: "http://[::1"}, "url"},
		{"oci with an http url", hubv1.ChartSource{Name: "a", Type: "oci", URL: "https://ghcr.io/x", Charts: []string{"x"}}, "url"},
		{"oci with a tag", hubv1.ChartSource{Name: "a", Type: "oci", URL: "oci://ghcr.io/x/shuttle:1.0.0", Charts: []string{"x"}}, "url"},
		{"oci without charts", hubv1.ChartSource{Name: "a", Type: "oci", URL: "oci://ghcr.io/x"}, "charts"},
		{"oci bad chart name", hubv1.ChartSource{Name: "a", Type: "oci", URL: "oci://ghcr.io/x", Charts: []string{"ok", "Not OK"}}, "charts[1]"},
		{"oci chart twice", hubv1.ChartSource{Name: "a", Type: "oci", URL: "oci://ghcr.io/x", Charts: []string{"ok", "ok"}}, "charts[1]"},
		{"local relative", hubv1.ChartSource{Name: "a", Type: "local", URL: "charts/shuttle"}, "url"},
		{"local http url", hubv1.ChartSource{Name: "a", Type: "local", URL: "http://x/charts"}, "url"},
		{"local file URL with a host", hubv1.ChartSource{Name: "a", Type: "local", URL: "file://nas/charts"}, "url"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := catalog.ValidateSource(tc.src)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("ValidateSource = %v, want nil", err)
				}
				return
			}
			var fe *catalog.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("ValidateSource = %v, want a *FieldError", err)
			}
			if fe.Field != tc.field {
				t.Errorf("field %q, want %q (%v)", fe.Field, tc.field, err)
			}
		})
	}
}

func TestBadSources(t *testing.T) {
	ctx := t.Context()
	c := newCatalog(t, catalog.Options{Timeout: 10 * time.Second})
	closedURL := "http://" + deadaddr.TCP(t)
	notARepo := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(notARepo.Close)
	garbage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("<html>this is not an index</html>"))
	}))
	t.Cleanup(garbage.Close)
	notADir := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(notADir, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		src  hubv1.ChartSource
		want []string // substrings of the error
	}{
		{"unknown type", hubv1.ChartSource{Name: "a", Type: "svn", URL: "https://x"}, []string{"type", `unknown type "svn"`}},
		{"bad url", hubv1.ChartSource{Name: "a", Type: "http", URL: "ftp://x/charts"}, []string{"url", "http:// or https://"}},
		{"repository unreachable", hubv1.ChartSource{Name: "gone", Type: "http", URL: closedURL}, []string{"chart source gone", closedURL + "/index.yaml", "connection refused"}},
		{"repository without an index", hubv1.ChartSource{Name: "empty", Type: "http", URL: notARepo.URL}, []string{"chart source empty", "404"}},
		{"index that does not parse", hubv1.ChartSource{Name: "junk", Type: "http", URL: garbage.URL}, []string{"chart source junk", "index of " + garbage.URL}},
		{"registry unreachable", hubv1.ChartSource{Name: "reg", Type: "oci", URL: "oci://" + strings.TrimPrefix(closedURL, "http://") + "/charts", Charts: []string{"shuttle"}, PlainHTTP: true}, []string{"chart source reg", "chart shuttle", "connection refused"}},
		{"local path missing", hubv1.ChartSource{Name: "disk", Type: "local", URL: "/nonexistent/misaki/charts"}, []string{"chart source disk", "/nonexistent/misaki/charts", "no such file"}},
		{"local file not a chart", hubv1.ChartSource{Name: "disk", Type: "local", URL: notADir}, []string{"chart source disk", "neither a chart directory nor a .tgz"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := c.Check(ctx, tc.src)
			if err == nil {
				t.Fatal("Check = nil, want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if _, lerr := c.List(ctx, tc.src); lerr == nil {
				t.Error("List = nil error, want one")
			}
		})
	}
}

// A source that does not answer does not hold a caller whose context ends.
func TestContextEndsCall(t *testing.T) {
	got := make(chan struct{})
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(got)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs before srv.Close
	c := newCatalog(t, catalog.Options{})
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		<-got
		cancel()
	}()
	err := c.Check(ctx, hubv1.ChartSource{Name: "slow", Type: hubv1.SourceHTTP, URL: srv.URL})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Check = %v, want context.Canceled", err)
	}
}

func TestLoadRejectsGarbage(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"not gzip", []byte("hello")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := catalog.Load(tc.data); err == nil {
				t.Fatal("Load = nil error")
			}
		})
	}
}

func FuzzLoad(f *testing.F) {
	data, err := catalog.PackageDir(catalogtest.ShuttleChart(f))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Add([]byte{})
	f.Add(data[:len(data)/2])
	f.Fuzz(func(t *testing.T, b []byte) {
		ch, err := catalog.Load(b)
		if err == nil && (ch == nil || ch.Metadata == nil) {
			t.Fatal("Load returned no chart and no error")
		}
	})
}
