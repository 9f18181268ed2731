// Package rendertest helps tests build chart archives for the hub's
// renderer: it packages a chart directory with the Helm SDK, as `helm
// package` does, and names the shuttle test chart other packages' tests can
// render.
package rendertest

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"helm.sh/helm/v4/pkg/chart/v2/loader"
	chartutil "helm.sh/helm/v4/pkg/chart/v2/util"

	"github.com/misaki-io/misaki/internal/hub/render"
)

// modTime is stamped on every file of an archive, so packaging the same
// directory gives the same bytes (and digest) on any checkout.
var modTime = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// ChartArchive packages the chart in dir to .tgz bytes with the Helm SDK
// and returns them with their digest ("sha256:<hex>"). The bytes depend
// only on the files' contents and names. It fails the test if the chart
// does not load or save.
func ChartArchive(t testing.TB, dir string) (data []byte, digest string) {
	t.Helper()
	ch, err := loader.LoadDir(dir)
	if err != nil {
		t.Fatalf("rendertest: load chart %s: %v", dir, err)
	}
	ch.StampModTimes(modTime)
	path, err := chartutil.Save(ch, t.TempDir())
	if err != nil {
		t.Fatalf("rendertest: package chart %s: %v", dir, err)
	}
	data, err = os.ReadFile(path)
	if err != nil {
		t.Fatalf("rendertest: %v", err)
	}
	return data, render.Digest(data)
}

// ShuttleDir returns the directory of the shuttle test chart: Deployments
// "<release>-api" (small requests, mounting ConfigMap "<release>-api",
// behind Service "<release>-api") and "<release>-planner" (big requests,
// annotations misaki.io/placement and misaki.io/component: planner, Secret
// "<release>-planner" via envFrom, PVC "<release>-planner-maps", Service
// "<release>-planner"), CronJob "<release>-reports", a cluster-scoped
// RouteMap from its crds/, a ServiceMonitor where monitoring.coreos.com/v1
// is served, a pre-install hook, a test hook, NOTES.txt and
// values.schema.json.
func ShuttleDir() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		panic("rendertest: no caller information")
	}
	return filepath.Join(filepath.Dir(file), "..", "testdata", "shuttle")
}
