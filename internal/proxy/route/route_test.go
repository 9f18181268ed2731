package route

import (
	"fmt"
	"strings"
	"testing"

	linkv1 "github.com/misaki-io/misaki/api/link/v1"
	"github.com/misaki-io/misaki/internal/proxy/config"
	"github.com/misaki-io/misaki/internal/proxy/link"
)

func TestLinkUsable(t *testing.T) {
	wifi := link.State{Name: "wlan", Class: "wifi", Up: true}
	cell := link.State{Name: "modem", Class: "cellular", Up: true, Metered: true}
	roam := link.State{Name: "modem", Class: "cellular", Up: true, Roaming: true}
	down := func(s link.State) link.State { s.Up = false; return s }
	allow := config.Offline{Metered: config.Allow, Roaming: config.Allow}
	only := func(classes ...string) config.Offline { p := allow; p.Links = classes; return p }
	deny := func(metered, roaming bool) config.Offline {
		p := allow
		if metered {
			p.Metered = config.Deny
		}
		if roaming {
			p.Roaming = config.Deny
		}
		return p
	}
	tests := []struct {
		name   string
		policy config.Offline
		links  []link.State
		ok     bool
		reason string
	}{
		{"no link model", allow, nil, true, ""},
		{"any link", allow, []link.State{down(wifi), cell}, true, ""},
		{"all down", allow, []link.State{down(wifi), down(cell)}, false, "no link is up"},
		{"wifi only, cellular up", only("wifi"), []link.State{down(wifi), cell}, false, "not of an allowed class"},
		{"wifi only, wifi up", only("wifi"), []link.State{wifi, cell}, true, ""},
		{"metered denied", deny(true, false), []link.State{down(wifi), cell}, false, "metered"},
		{"metered denied, wifi up", deny(true, false), []link.State{wifi, cell}, true, ""},
		{"roaming denied", deny(false, true), []link.State{roam}, false, "roaming"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, reason := LinkUsable(tt.policy, tt.links)
			if ok != tt.ok || !strings.Contains(reason, tt.reason) {
				t.Errorf("got %v %q, want %v containing %q", ok, reason, tt.ok, tt.reason)
			}
		})
	}
}

func TestSteer(t *testing.T) {
	iface := func(name string, ok bool) link.Interface {
		i := link.Interface{Name: name, Up: true, Running: true}
		if ok {
			i.Addrs = []string{"192.0.2.1/24"}
		}
		return i
	}
	wifi := link.State{Name: "wlan", Class: "wifi", Up: true, Interfaces: []link.Interface{iface("wlan0", false), iface("wlan1", true)}}
	cell := link.State{Name: "modem", Class: "cellular", Up: true, Metered: true, Interfaces: []link.Interface{iface("wwan0", true)}}
	eth := link.State{Name: "eth", Class: "ethernet", Up: true, Interfaces: []link.Interface{iface("eth0", true)}}
	adminOnly := link.State{Name: "sat", Class: "satellite", Up: true}
	down := func(s link.State) link.State { s.Up = false; return s }
	allow := config.Offline{Metered: config.Allow, Roaming: config.Allow}
	only := func(classes ...string) config.Offline { p := allow; p.Links = classes; return p }
	noMetered := allow
	noMetered.Metered = config.Deny
	steer := &linkv1.Steer{Mark: 0x4d5a0000, Table: 15100, Ports: [2]uint16{61000, 61999}}
	nodeWifi := link.State{Name: "wifi", Class: "wifi", Up: true, Agent: true, Steer: steer,
		Interfaces: []link.Interface{iface("wlan0", true)}}
	nodeCell := link.State{Name: "cellular", Class: "cellular", Up: true, Metered: true, Agent: true,
		Steer: &linkv1.Steer{Mark: 0x4d5a0001, Table: 15101, Ports: [2]uint16{62000, 62999}}}
	unsteered := nodeWifi
	unsteered.Steer = nil
	tests := []struct {
		name   string
		policy config.Offline
		links  []link.State
		always bool
		want   string
	}{
		{"every up link allowed: kernel chooses", allow, []link.State{wifi, cell}, false, ""},
		{"a budget steers although every link is allowed, unmetered first", allow, []link.State{cell, wifi}, true, "wlan1"},
		{"a budget with only the modem up steers onto it", allow, []link.State{down(wifi), cell}, true, "wwan0"},
		{"node link: the agent's mark and ports", only("wifi"), []link.State{nodeCell, nodeWifi}, false, "mark 0x4d5a0000 ports 61000-61999"},
		{"node link without policy routing: cannot steer", only("wifi"), []link.State{nodeCell, unsteered}, false, ""},
		{"node modem for a budgeted route", allow, []link.State{down(nodeWifi), nodeCell}, true, "mark 0x4d5a0001 ports 62000-62999"},
		{"wifi only with the modem up: first usable wifi interface", only("wifi"), []link.State{wifi, cell}, false, "wlan1"},
		{"first allowed link in config order", only("wifi", "ethernet"), []link.State{eth, wifi, cell}, false, "eth0"},
		{"metered denied", noMetered, []link.State{cell, wifi}, false, "wlan1"},
		{"forbidden link down: nothing to avoid", only("wifi"), []link.State{wifi, down(cell)}, false, ""},
		{"allowed link has no interface: cannot steer", only("satellite"), []link.State{adminOnly, cell}, false, ""},
		{"no allowed link up: blocked", only("wifi"), []link.State{down(wifi), cell}, false, "blocked"},
		{"over budget with only the modem: blocked", noMetered, []link.State{down(nodeWifi), nodeCell}, true, "blocked"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Steer(tt.policy, tt.links, tt.always)
			s := got.Interface
			if got.Blocked {
				s = "blocked"
			}
			if got.Mark != 0 {
				s = fmt.Sprintf("mark %#x ports %d-%d", got.Mark, got.Ports[0], got.Ports[1])
			}
			if s != tt.want {
				t.Errorf("Steer = %q (%+v), want %q", s, got, tt.want)
			}
		})
	}
}
