// Package catalogtest gives tests real chart sources on loopback: a Helm
// chart repository (index.yaml written by the Helm SDK's repo code, archives
// packaged by the SDK) served over HTTP, an in-process OCI registry
// (go-containerregistry's registry handler) that charts are pushed to with
// the Helm SDK's registry client, and the path of the testdata chart
// "shuttle" the hub's tests deploy.
package catalogtest

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	ggcr "github.com/google/go-containerregistry/pkg/registry"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	chartutil "helm.sh/helm/v4/pkg/chart/v2/util"
	"helm.sh/helm/v4/pkg/registry"
	repo "helm.sh/helm/v4/pkg/repo/v1"
)

// ShuttleChart returns the path of the testdata chart "shuttle" (an api
// Deployment with modest requests, its Service and ConfigMap, and a planner
// Deployment and Service with big requests; misaki.io/component and
// misaki.io/placement annotations; a values.schema.json). Tests that change
// it copy it first (os.CopyFS).
func ShuttleChart(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("catalogtest: cannot find my source file")
	}
	dir := filepath.Join(filepath.Dir(file), "..", "testdata", "charts", "shuttle")
	if _, err := os.Stat(filepath.Join(dir, "Chart.yaml")); err != nil {
		t.Fatalf("catalogtest: shuttle chart: %v", err)
	}
	return dir
}

// Package packages a chart directory into outDir with the Helm SDK (helm
// package) and returns the .tgz's path.
func Package(t testing.TB, chartDir, outDir string) string {
	t.Helper()
	ch, err := loader.LoadDir(chartDir)
	if err != nil {
		t.Fatalf("catalogtest: load chart %s: %v", chartDir, err)
	}
	p, err := chartutil.Save(ch, outDir)
	if err != nil {
		t.Fatalf("catalogtest: package chart %s: %v", chartDir, err)
	}
	return p
}

// Repo is a Helm chart repository served over HTTP on loopback from Dir.
type Repo struct {
	URL string // the repository's base URL (index.yaml is under it)
	Dir string // the served directory: index.yaml and the archives

	mu sync.Mutex // guards index writes
}

// NewRepo starts an empty repository (an index without entries); the
// server stops when the test ends.
func NewRepo(t testing.TB) *Repo {
	t.Helper()
	r := &Repo{Dir: t.TempDir()}
	srv := httptest.NewServer(http.FileServer(http.Dir(r.Dir)))
	t.Cleanup(srv.Close)
	r.URL = srv.URL
	r.Reindex(t)
	return r
}

// Add packages the chart directories into the repository and rewrites the
// index. A chart version already there is replaced by the new bytes (a
// source changing a published version).
func (r *Repo) Add(t testing.TB, chartDirs ...string) {
	t.Helper()
	for _, d := range chartDirs {
		Package(t, d, r.Dir)
	}
	r.Reindex(t)
}

// Reindex rewrites index.yaml from the archives in Dir with the SDK's
// IndexDirectory (digests included).
func (r *Repo) Reindex(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	idx, err := repo.IndexDirectory(r.Dir, r.URL)
	if err != nil {
		t.Fatalf("catalogtest: index %s: %v", r.Dir, err)
	}
	idx.SortEntries()
	if err := idx.WriteFile(filepath.Join(r.Dir, "index.yaml"), 0o644); err != nil {
		t.Fatalf("catalogtest: write index: %v", err)
	}
}

// ServeRepo packages the chart directories and serves them as a Helm chart
// repository on loopback until the test ends; it returns the repository's
// URL.
func ServeRepo(t testing.TB, chartDirs ...string) string {
	t.Helper()
	r := NewRepo(t)
	r.Add(t, chartDirs...)
	return r.URL
}

// ServeRegistry starts an in-process OCI registry on loopback (plain HTTP)
// until the test ends and returns its host:port.
func ServeRegistry(t testing.TB) string {
	t.Helper()
	srv := httptest.NewServer(ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// PushChart packages a chart directory and pushes it with the Helm SDK's
// registry client (plain HTTP) to oci://<host>/<path>/<name>:<version>, as
// helm push does. It returns the ref pushed to and the digest
// ("sha256:<hex>") of the archive bytes pushed. Pushing a version again
// moves its tag to the new bytes.
func PushChart(t testing.TB, host, path, chartDir string) (ref, digest string) {
	t.Helper()
	data := readFile(t, Package(t, chartDir, t.TempDir()))
	ch, err := loader.LoadDir(chartDir)
	if err != nil {
		t.Fatalf("catalogtest: load chart %s: %v", chartDir, err)
	}
	rc, err := registry.NewClient(
		registry.ClientOptPlainHTTP(),
		registry.ClientOptCredentialsFile(filepath.Join(t.TempDir(), "config.json")),
	)
	if err != nil {
		t.Fatalf("catalogtest: registry client: %v", err)
	}
	ref = host
	if path != "" {
		ref += "/" + strings.Trim(path, "/")
	}
	ref += "/" + ch.Name() + ":" + ch.Metadata.Version
	res, err := rc.Push(data, ref)
	if err != nil {
		t.Fatalf("catalogtest: push %s: %v", ref, err)
	}
	sum := sha256.Sum256(data)
	digest = "sha256:" + hex.EncodeToString(sum[:])
	if res.Chart.Digest != digest {
		t.Fatalf("catalogtest: push %s: layer digest %s, archive %s", ref, res.Chart.Digest, digest)
	}
	return ref, digest
}

func readFile(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("catalogtest: %v", err)
	}
	return b
}
