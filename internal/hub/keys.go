package hub

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/trust"
)

// reloadEvery is how often a replica looks for a newer root in the shared
// key directory (another replica, or misaki-hub keys rotate, may have
// written one).
const reloadEvery = 10 * time.Second

// keyring is the hub's signing keys: trust.Keys, reloaded when the key
// directory has a newer root. It implements desired.Signer and api.Trust.
type keyring struct {
	dir string
	log *slog.Logger
	// onReload runs (outside mu) after a newer root written elsewhere was
	// loaded: the hub re-issues every vehicle's revision with the new key.
	onReload func()

	mu      sync.Mutex // guards the fields below; held across Rotate
	keys    *trust.Keys
	checked time.Time
}

func openKeys(dir string, now time.Time, log *slog.Logger) (*keyring, error) {
	if err := trust.Init(dir, now, trust.InitOptions{}); err != nil {
		return nil, err
	}
	k, err := trust.LoadKeys(dir)
	if err != nil {
		return nil, err
	}
	v, _ := k.Root()
	if left := time.Until(k.RootExpires()); left < 60*24*time.Hour {
		log.Warn("trust root expires soon: rotate a key to renew it (misaki keys rotate)", "rootVersion", v, "expires", k.RootExpires())
	}
	return &keyring{dir: dir, log: log.With("component", "keys"), keys: k, checked: time.Now()}, nil
}

func (kr *keyring) current() *trust.Keys {
	k, reloaded := kr.load()
	if reloaded && kr.onReload != nil {
		kr.onReload()
	}
	return k
}

func (kr *keyring) load() (*trust.Keys, bool) {
	kr.mu.Lock()
	defer kr.mu.Unlock()
	if time.Since(kr.checked) < reloadEvery {
		return kr.keys, false
	}
	kr.checked = time.Now()
	v, _ := kr.keys.Root()
	if _, err := os.Stat(filepath.Join(kr.dir, "root", fmt.Sprintf("%d.root.json", v+1))); err != nil {
		return kr.keys, false
	}
	k, err := trust.LoadKeys(kr.dir)
	if err != nil {
		kr.log.Error("newer root in the key directory does not load; signing with the old keys", "err", err)
		return kr.keys, false
	}
	nv, _ := k.Root()
	kr.log.Info("loaded a newer trust root", "rootVersion", nv)
	kr.keys = k
	return k, true
}

func (kr *keyring) Sign(ctx context.Context, s hubv1.DesiredState) (hubv1.Desired, error) {
	return kr.current().Sign(ctx, s)
}

func (kr *keyring) Root() (int64, []byte) { return kr.current().Root() }

func (kr *keyring) Version() int64 { return kr.current().Version() }

func (kr *keyring) RootVersion(n int64) ([]byte, error) { return kr.current().RootVersion(n) }

// Rotate rotates a role's key in the key directory and loads the result.
func (kr *keyring) Rotate(ctx context.Context, role string) (int64, error) {
	kr.mu.Lock()
	defer kr.mu.Unlock()
	v, err := trust.Rotate(kr.dir, role, time.Now())
	if err != nil {
		return 0, err
	}
	k, err := trust.LoadKeys(kr.dir)
	if err != nil {
		return 0, err
	}
	kr.keys, kr.checked = k, time.Now()
	kr.log.Info("rotated a key", "role", role, "rootVersion", v)
	return v, nil
}
