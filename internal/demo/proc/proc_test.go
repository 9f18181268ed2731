package proc_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/misaki-io/misaki/internal/demo/proc"
)

func TestGroup(t *testing.T) {
	g := &proc.Group{Dir: t.TempDir()}
	sleeper, err := g.Start("sleeper", "sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	failer, err := g.Start("failer", "sh", "-c", "echo broken; exit 3")
	if err != nil {
		t.Fatal(err)
	}
	<-failer.Done()
	if !failer.Exited() || failer.Err() == nil || proc.IsTermination(failer.Err()) {
		t.Errorf("failer: exited %v, err %v", failer.Exited(), failer.Err())
	}
	if b, _ := os.ReadFile(filepath.Join(g.Dir, "failer.log")); strings.TrimSpace(string(b)) != "broken" {
		t.Errorf("failer.log = %q, want its output", b)
	}
	if !strings.Contains(proc.Exited(failer).Error(), failer.Log) {
		t.Errorf("Exited(failer) = %v, want the log's path in it", proc.Exited(failer))
	}
	if sleeper.Exited() {
		t.Fatal("sleeper exited early")
	}
	start := time.Now()
	err = g.StopAll(5 * time.Second)
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("StopAll took %v for a process that ends on SIGTERM", took)
	}
	// The failer's own exit status is reported; the sleeper's SIGTERM is not.
	if err == nil || !strings.Contains(err.Error(), "failer") || strings.Contains(err.Error(), "sleeper") {
		t.Errorf("StopAll = %v, want only the failer's exit status", err)
	}
	if !sleeper.Exited() || !proc.IsTermination(sleeper.Err()) {
		t.Errorf("sleeper: exited %v, err %v", sleeper.Exited(), sleeper.Err())
	}
}

func TestKill(t *testing.T) {
	g := &proc.Group{Dir: t.TempDir()}
	p, err := g.Start("trapper", "sh", "-c", "trap '' TERM; exec sleep 60")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if !p.Exited() || !proc.IsTermination(p.Err()) {
		t.Errorf("after Kill: exited %v, err %v", p.Exited(), p.Err())
	}
	if err := p.Kill(); err != nil {
		t.Errorf("a second Kill: %v", err)
	}
}
