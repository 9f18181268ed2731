package system

import (
	"embed"
	"io/fs"
	"path/filepath"
)

// charts are the story's Helm charts: can-uploader (one small Deployment
// and its Service) and video-pipeline (camera-uploader, small, pinned to
// the vehicle; inference, 4 CPU and 8Gi, placed by the hub).
//
//go:embed charts
var charts embed.FS

// writeCharts copies the charts into dir, a local chart source for the
// hub (misaki repo add --type local).
func writeCharts(dir string) error {
	return fs.WalkDir(charts, "charts", func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := charts.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel("charts", filepath.FromSlash(path))
		return writeFile(filepath.Join(dir, rel), b)
	})
}
