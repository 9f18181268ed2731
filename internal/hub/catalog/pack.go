package catalog

import (
	"bytes"
	"fmt"
	"os"
	"time"

	"helm.sh/helm/v4/pkg/chart/common"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	chartutil "helm.sh/helm/v4/pkg/chart/v2/util"
)

// PackTime is the modification time PackageDir gives every file of the
// archive (and the SDK's writer leaves the gzip header's time unset), so a
// directory's archive depends on its files' contents and names only, not on
// when they were touched: two calls give the same bytes and digest. Tar
// reads a zero time as "now", so the time is the Unix epoch, not Go's zero.
var PackTime = time.Unix(0, 0).UTC()

// Load loads a chart archive (.tgz bytes), such as a blob from the store.
func Load(data []byte) (*chart.Chart, error) {
	ch, err := loader.LoadArchive(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("load chart archive: %w", err)
	}
	if ch.Metadata == nil {
		return nil, fmt.Errorf("load chart archive: no Chart.yaml")
	}
	return ch, nil
}

// PackageDir packages an unpacked chart directory to .tgz bytes with the
// SDK's loader and writer (helm package), deterministically: every file's
// time is PackTime. The bytes are stable for as long as the files and the
// hub's build are: a Go release that changed compress/flate's output would
// change them, which is why the hub keeps a pinned chart's bytes in its
// store rather than re-packing.
func PackageDir(dir string) ([]byte, error) {
	return packageDir(dir, "")
}

func (c *Catalog) packageDir(dir string) ([]byte, error) {
	tmp, err := c.scratch("package-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	return packageDir(dir, tmp)
}

// packageDir writes the archive under tmp ("" for a new temporary
// directory) and returns its bytes.
func packageDir(dir, tmp string) ([]byte, error) {
	ch, err := loader.LoadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("load chart %s: %w", dir, err)
	}
	setTimes(ch, PackTime)
	if tmp == "" {
		if tmp, err = os.MkdirTemp("", "misaki-package-"); err != nil {
			return nil, fmt.Errorf("package chart %s: %w", dir, err)
		}
		defer os.RemoveAll(tmp)
	}
	out, err := chartutil.Save(ch, tmp)
	if err != nil {
		return nil, fmt.Errorf("package chart %s: %w", dir, err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("package chart %s: %w", dir, err)
	}
	return data, nil
}

// setTimes sets every time the SDK's archive writer puts in a tar header,
// in ch and its dependencies.
func setTimes(ch *chart.Chart, t time.Time) {
	ch.ModTime = t
	ch.SchemaModTime = t
	for _, files := range [][]*common.File{ch.Raw, ch.Templates, ch.Files} {
		for _, f := range files {
			f.ModTime = t
		}
	}
	for _, dep := range ch.Dependencies() {
		setTimes(dep, t)
	}
}
