//go:build linux

package hostnet

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/misaki-io/misaki/internal/netnstest"
)

func TestScanAndWatch(t *testing.T) {
	ns := netnstest.New(t, fmt.Sprintf("misaki-hn-%d", os.Getpid()))
	// Names of their own: sysfs is the host's, and a host interface of
	// the same name would lend its device type.
	ns.IP("link", "add", "mhn0", "type", "veth", "peer", "name", "mhn1")
	ns.IP("addr", "add", "10.203.1.2/24", "dev", "mhn0")
	ns.IP("addr", "add", "fd03:1::2/64", "dev", "mhn0", "nodad")
	ns.IP("link", "set", "mhn0", "up")

	scan := func() (map[string]Iface, error) {
		var ifs []Iface
		err := ns.Do(func() (err error) { ifs, err = Scan(); return err })
		out := map[string]Iface{}
		for _, f := range ifs {
			out[f.Name] = f
		}
		return out, err
	}
	ifs, err := scan()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ifs["lo"]; ok {
		t.Fatal("Scan lists the loopback interface")
	}
	f := ifs["mhn0"]
	// The peer is down: no carrier.
	if f.Type != "veth" || !f.Up || f.Running || f.Usable() {
		t.Fatalf("mhn0 with its peer down: %+v", f)
	}
	if !slices.Equal(f.Addrs, []string{"10.203.1.2/24", "fd03:1::2/64"}) {
		t.Fatalf("mhn0's addresses (no link-local): %v", f.Addrs)
	}
	if p := ifs["mhn1"]; p.Up || p.Usable() {
		t.Fatalf("mhn1: %+v", p)
	}

	ns.IP("link", "set", "mhn1", "up")
	ns.IP("route", "add", "default", "via", "10.203.1.1", "dev", "mhn0", "metric", "20")
	ns.IP("route", "add", "default", "via", "10.203.1.9", "dev", "mhn0", "metric", "10")
	if ifs, err = scan(); err != nil {
		t.Fatal(err)
	}
	f = ifs["mhn0"]
	if !f.Running || !f.Usable() || f.Gateway != "10.203.1.9" {
		t.Fatalf("mhn0 with carrier and default routes: %+v", f)
	}
	var dsts []string
	for _, r := range f.Routes {
		d := "default"
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones > 0 {
				d = r.Dst.String()
			}
		}
		dsts = append(dsts, fmt.Sprintf("%s/%d", d, r.Priority))
	}
	for _, want := range []string{"10.203.1.0/24/0", "default/10", "default/20", "fd03:1::/64/256"} {
		if !slices.Contains(dsts, want) {
			t.Errorf("mhn0's routes %v lack %s", dsts, want)
		}
	}

	// Watch wakes the agent for links, addresses and routes.
	events := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := ns.Do(func() error { return Watch(ctx, events) }); err != nil {
		t.Fatal(err)
	}
	for _, change := range [][]string{
		{"link", "set", "mhn1", "down"},
		{"addr", "add", "10.203.2.2/24", "dev", "mhn0"},
		{"route", "add", "198.51.100.0/24", "via", "10.203.1.1", "dev", "mhn0"},
	} {
		drain(events)
		ns.IP(change...)
		select {
		case <-events:
		case <-time.After(10 * time.Second):
			t.Fatalf("no event for ip %s", strings.Join(change, " "))
		}
	}
}

func drain(ch chan struct{}) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}
