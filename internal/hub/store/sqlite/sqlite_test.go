package sqlite_test

import (
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/misaki-io/misaki/internal/hub/store"
	"github.com/misaki-io/misaki/internal/hub/store/sqlite"
	"github.com/misaki-io/misaki/internal/hub/store/storetest"
)

func open(t *testing.T) store.Store {
	s := openAt(t, filepath.Join(t.TempDir(), "hub.db"))
	return s
}

func openAt(t *testing.T, path string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(t.Context(), path, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

func TestStore(t *testing.T) {
	storetest.Run(t, open)
}
