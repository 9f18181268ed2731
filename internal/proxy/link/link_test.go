package link

import (
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/proxy/config"
)

type fakeKernel struct {
	mu  sync.Mutex
	ifs []Interface
}

func (k *fakeKernel) scan() ([]Interface, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]Interface(nil), k.ifs...), nil
}

func (k *fakeKernel) set(ifs ...Interface) {
	k.mu.Lock()
	k.ifs = ifs
	k.mu.Unlock()
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func up(name string) Interface {
	return Interface{Name: name, Up: true, Running: true, Addrs: []string{"192.0.2.1/24"}}
}

func TestMonitorFollowsKernelAndOverrides(t *testing.T) {
	k := &fakeKernel{}
	changes := 0
	m := NewMonitor([]config.Link{
		{Name: "wlan", Match: "wlan*", Class: "wifi"},
		{Name: "modem", Match: "wwan0", Class: "cellular", Metered: true},
		{Name: "sat", Class: "satellite"},
	}, time.Second, quiet, clock.NewFake(time.Unix(0, 0)), func() { changes++ })
	m.SetScanner(k.scan)

	state := func() map[string]State {
		out := map[string]State{}
		for _, s := range m.Snapshot() {
			out[s.Name] = s
		}
		return out
	}
	k.set(up("wlan1"), Interface{Name: "wwan0", Up: true, Running: false, Addrs: []string{"10.0.0.1/8"}}, up("eth0"))
	m.Rescan()
	s := state()
	if !s["wlan"].Up || s["modem"].Up || !s["sat"].Up {
		t.Fatalf("after scan: wlan=%v modem=%v (no carrier) sat=%v (no glob: up)", s["wlan"].Up, s["modem"].Up, s["sat"].Up)
	}
	if s["wlan"].Source != "kernel" || s["sat"].Source != "config" || len(s["wlan"].Interfaces) != 1 {
		t.Fatalf("sources/interfaces: %+v", s)
	}

	// An interface without an address is not usable.
	k.set(Interface{Name: "wlan1", Up: true, Running: true}, up("wwan0"))
	m.Rescan()
	if s := state(); s["wlan"].Up || !s["modem"].Up {
		t.Fatalf("wlan without address must be down, modem up: %+v", s)
	}

	// The connectivity manager overrides, then hands back to the kernel.
	if _, err := m.Set("modem", Override{State: "down"}); err != nil {
		t.Fatal(err)
	}
	if s := state(); s["modem"].Up || s["modem"].Source != "admin" {
		t.Fatalf("override down: %+v", s["modem"])
	}
	yes := true
	if _, err := m.Set("modem", Override{State: "auto", Roaming: &yes}); err != nil {
		t.Fatal(err)
	}
	if s := state(); !s["modem"].Up || !s["modem"].Roaming {
		t.Fatalf("auto with roaming: %+v", s["modem"])
	}
	if _, err := m.Set("sat", Override{State: "down"}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Set("sat", Override{State: "auto"}); err != nil {
		t.Fatal(err)
	}
	if s := state(); !s["sat"].Up {
		t.Fatal("a link without a glob must be up again after auto")
	}
	if _, err := m.Set("nope", Override{State: "up"}); !errors.Is(err, ErrUnknownLink) {
		t.Fatalf("unknown link: %v", err)
	}
	if _, err := m.Set("wlan", Override{State: "sideways"}); err == nil {
		t.Fatal("bad state accepted")
	}
	if changes < 4 {
		t.Fatalf("onChange called %d times", changes)
	}
}

func TestScanKernelSeesLoopback(t *testing.T) {
	ifs, err := ScanKernel()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifs {
		if i.Name == "lo" {
			if !Usable(i) {
				t.Fatalf("lo not usable: %+v", i)
			}
			return
		}
	}
	t.Skip("no interface named lo on this system")
}
