package rendertest_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/v2/loader"

	"github.com/misaki-io/misaki/internal/hub/render"
	"github.com/misaki-io/misaki/internal/hub/render/rendertest"
)

func TestChartArchive(t *testing.T) {
	data, digest := rendertest.ChartArchive(t, rendertest.ShuttleDir())
	t.Run("loads", func(t *testing.T) {
		ch, err := loader.LoadArchive(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if ch.Name() != "shuttle" || len(ch.Templates) == 0 || len(ch.Schema) == 0 {
			t.Errorf("chart %s: %d templates, schema %d bytes", ch.Name(), len(ch.Templates), len(ch.Schema))
		}
	})
	t.Run("digest", func(t *testing.T) {
		if digest != render.Digest(data) || !strings.HasPrefix(digest, "sha256:") {
			t.Errorf("digest %s, want %s", digest, render.Digest(data))
		}
	})
	t.Run("same bytes from a copy touched later", func(t *testing.T) {
		// File times differ between checkouts; the archive must not.
		dir := filepath.Join(t.TempDir(), "shuttle")
		if err := os.CopyFS(dir, os.DirFS(rendertest.ShuttleDir())); err != nil {
			t.Fatal(err)
		}
		again, d2 := rendertest.ChartArchive(t, dir)
		if d2 != digest || !bytes.Equal(again, data) {
			t.Errorf("digest %s from the copy, %s from the original", d2, digest)
		}
	})
}
