package idem_test

import (
	"path/filepath"
	"testing"

	"github.com/misaki-io/misaki/internal/gateway/idem"
	"github.com/misaki-io/misaki/internal/gateway/idem/idemtest"
)

// The store suite on the local store: one file per test.
func TestSuite(t *testing.T) {
	idemtest.Run(t, func(t *testing.T) idemtest.Backend {
		return &fileBackend{path: filepath.Join(t.TempDir(), "keys.db")}
	})
}

type fileBackend struct{ path string }

func (b *fileBackend) Open(t *testing.T, o idemtest.Options) idem.Store {
	t.Helper()
	s, err := idem.Open(b.path, o.Window, o.Clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Kill closes the store: its claims live in memory, so a crash and a stop
// end them alike, and its answers are durable either way (the crash tests
// in idem_test.go cover what a crash leaves on disk).
func (b *fileBackend) Kill(t *testing.T, s idem.Store) {
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func (b *fileBackend) Shared() bool { return false }
