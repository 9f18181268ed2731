//go:build linux

package linkd

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	linkv1 "github.com/misaki-io/misaki/api/link/v1"
	"github.com/misaki-io/misaki/internal/linkd/config"
	"github.com/misaki-io/misaki/internal/linkd/hostnet"
)

// testRules: Wi-Fi by type or name, a metered modem, and Ethernet.
var testRules = []config.Rule{
	{Name: "wifi", Type: "wlan", Class: "wifi"},
	{Name: "wifi", Match: "wlan*", Class: "wifi"},
	{Name: "modem", Match: "wwan*", Class: "cellular", Metered: true},
	{Name: "modem", Match: "usb*", Class: "cellular", Metered: true, Roaming: true},
	{Name: "eth", Match: "eth*", Class: "ethernet"},
}

func testConfig(probes ...string) *config.Config {
	c := &config.Config{Links: append([]config.Rule(nil), testRules...)}
	c.Probe.Targets = probes
	c.SetDefaults()
	return c
}

func upIface(name string) hostnet.Iface {
	return hostnet.Iface{Name: name, Type: "device", Up: true, Running: true, Addrs: []string{"192.0.2.2/24"}, Gateway: "192.0.2.1"}
}

func wireIface(f hostnet.Iface) linkv1.Interface {
	return linkv1.Interface{Name: f.Name, Type: f.Type, Up: f.Up, Running: f.Running, Addrs: f.Addrs, Gateway: f.Gateway}
}

func TestCompute(t *testing.T) {
	yes, no := true, false
	wlan, wwan, eth := upIface("wlan0"), upIface("wwan0"), upIface("eth0")
	noCarrier := wlan
	noCarrier.Running = false
	noAddr := wlan
	noAddr.Addrs = nil
	down := wlan
	down.Up, down.Running = false, false
	usb := upIface("usb0")
	reachable := &linkv1.Probe{Target: "gw:443", Reachable: true, RTT: "1ms"}
	refused := &linkv1.Probe{Target: "gw:443", Error: "connection refused"}

	type want struct {
		up      bool
		reason  string
		source  string
		metered bool
		roaming bool
		probe   *linkv1.Probe
		ifaces  []string
	}
	tests := []struct {
		name      string
		cfg       *config.Config
		ifaces    []hostnet.Iface
		overrides map[string]linkv1.Override
		probes    map[string]*linkv1.Probe
		want      map[string]want
	}{
		{
			name:   "interfaces up",
			cfg:    testConfig(),
			ifaces: []hostnet.Iface{wlan, wwan, eth},
			want: map[string]want{
				"wifi":  {up: true, source: "kernel", ifaces: []string{"wlan0"}},
				"modem": {up: true, source: "kernel", metered: true, ifaces: []string{"wwan0"}},
				"eth":   {up: true, source: "kernel", ifaces: []string{"eth0"}},
			},
		},
		{
			name:   "no interface",
			cfg:    testConfig(),
			ifaces: []hostnet.Iface{upIface("lo"), upIface("cali0")},
			want: map[string]want{
				"wifi":  {reason: "no interface matches its rules", source: "kernel"},
				"modem": {reason: "no interface matches its rules", source: "kernel", metered: true},
				"eth":   {reason: "no interface matches its rules", source: "kernel"},
			},
		},
		{
			name:   "down, no carrier, no address",
			cfg:    testConfig(),
			ifaces: []hostnet.Iface{down, rename(noCarrier, "wlan1"), rename(noAddr, "wlan2")},
			want: map[string]want{
				"wifi": {source: "kernel", ifaces: []string{"wlan0", "wlan1", "wlan2"},
					reason: "no interface is up with carrier and an address: wlan0 down, wlan1 no carrier, wlan2 no address"},
				"modem": {reason: "no interface matches its rules", source: "kernel", metered: true},
				"eth":   {reason: "no interface matches its rules", source: "kernel"},
			},
		},
		{
			name:   "one usable interface is enough",
			cfg:    testConfig(),
			ifaces: []hostnet.Iface{noCarrier, {Name: "wlp3s0", Type: "wlan", Up: true, Running: true, Addrs: []string{"192.0.2.3/24"}}},
			want: map[string]want{
				"wifi":  {up: true, source: "kernel", ifaces: []string{"wlan0", "wlp3s0"}},
				"modem": {reason: "no interface matches its rules", source: "kernel", metered: true},
				"eth":   {reason: "no interface matches its rules", source: "kernel"},
			},
		},
		{
			name:   "the first interface's rule sets the flags",
			cfg:    testConfig(),
			ifaces: []hostnet.Iface{usb, wwan},
			want: map[string]want{
				"wifi":  {reason: "no interface matches its rules", source: "kernel"},
				"modem": {up: true, source: "kernel", metered: true, roaming: true, ifaces: []string{"usb0", "wwan0"}},
				"eth":   {reason: "no interface matches its rules", source: "kernel"},
			},
		},
		{
			name:   "probes reachable, unreachable, absent",
			cfg:    testConfig("gw:443"),
			ifaces: []hostnet.Iface{wlan, wwan, eth},
			probes: map[string]*linkv1.Probe{"wifi": reachable, "modem": refused},
			want: map[string]want{
				"wifi":  {up: true, source: "kernel", probe: reachable, ifaces: []string{"wlan0"}},
				"modem": {reason: "gateway gw:443 unreachable over it: connection refused", source: "kernel", metered: true, probe: refused, ifaces: []string{"wwan0"}},
				"eth":   {reason: "gateway not probed over it yet", source: "kernel", ifaces: []string{"eth0"}},
			},
		},
		{
			name:   "a probe of an unusable link does not count",
			cfg:    testConfig("gw:443"),
			ifaces: []hostnet.Iface{noCarrier},
			probes: map[string]*linkv1.Probe{"wifi": reachable},
			want: map[string]want{
				"wifi":  {source: "kernel", reason: "no interface is up with carrier and an address: wlan0 no carrier", ifaces: []string{"wlan0"}},
				"modem": {reason: "no interface matches its rules", source: "kernel", metered: true},
				"eth":   {reason: "no interface matches its rules", source: "kernel"},
			},
		},
		{
			name:   "probes not configured: results ignored",
			cfg:    testConfig(),
			ifaces: []hostnet.Iface{wwan},
			probes: map[string]*linkv1.Probe{"modem": refused},
			want: map[string]want{
				"wifi":  {reason: "no interface matches its rules", source: "kernel"},
				"modem": {up: true, source: "kernel", metered: true, ifaces: []string{"wwan0"}},
				"eth":   {reason: "no interface matches its rules", source: "kernel"},
			},
		},
		{
			name:   "overrides",
			cfg:    testConfig("gw:443"),
			ifaces: []hostnet.Iface{wlan, wwan},
			probes: map[string]*linkv1.Probe{"modem": refused},
			overrides: map[string]linkv1.Override{
				"wifi":  {State: "down"},
				"modem": {State: "up", Metered: &no, Roaming: &yes},
				"eth":   {State: "up"},
			},
			want: map[string]want{
				"wifi":  {source: "override", reason: "set down by the connectivity manager", ifaces: []string{"wlan0"}},
				"modem": {up: true, source: "override", roaming: true, probe: refused, ifaces: []string{"wwan0"}},
				"eth":   {up: true, source: "override"},
			},
		},
		{
			name:   "auto keeps the kernel's verdict and takes the flags",
			cfg:    testConfig(),
			ifaces: []hostnet.Iface{noCarrier, wwan},
			overrides: map[string]linkv1.Override{
				"wifi":  {State: "auto", Metered: &yes},
				"modem": {State: "auto", Metered: &no},
			},
			want: map[string]want{
				"wifi":  {source: "kernel", metered: true, reason: "no interface is up with carrier and an address: wlan0 no carrier", ifaces: []string{"wlan0"}},
				"modem": {up: true, source: "kernel", ifaces: []string{"wwan0"}},
				"eth":   {reason: "no interface matches its rules", source: "kernel"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			links := Compute(tt.cfg, tt.ifaces, tt.overrides, tt.probes)
			var names []string
			for _, l := range links {
				names = append(names, l.Name)
				w, ok := tt.want[l.Name]
				if !ok {
					t.Errorf("unexpected link %s", l.Name)
					continue
				}
				var ifaces []string
				for _, i := range l.Interfaces {
					ifaces = append(ifaces, i.Name)
				}
				got := want{up: l.Up, reason: l.Reason, source: l.Source, metered: l.Metered, roaming: l.Roaming, probe: l.Probe, ifaces: ifaces}
				if d := cmp.Diff(w, got, cmp.AllowUnexported(want{})); d != "" {
					t.Errorf("link %s (-want +got):\n%s", l.Name, d)
				}
				if !l.Since.IsZero() {
					t.Errorf("link %s: Compute set Since", l.Name)
				}
			}
			if d := cmp.Diff([]string{"wifi", "modem", "eth"}, names); d != "" {
				t.Errorf("links out of rule order (-want +got):\n%s", d)
			}
		})
	}
}

func rename(f hostnet.Iface, name string) hostnet.Iface {
	f.Name = name
	return f
}

func TestComputeCopiesInterfaces(t *testing.T) {
	wlan := upIface("wlan0")
	links := Compute(testConfig(), []hostnet.Iface{wlan}, nil, nil)
	if d := cmp.Diff([]linkv1.Interface{wireIface(wlan)}, links[0].Interfaces); d != "" {
		t.Fatalf("wifi's interfaces (-want +got):\n%s", d)
	}
	links[0].Interfaces[0].Addrs[0] = "changed"
	if wlan.Addrs[0] == "changed" {
		t.Fatal("Compute shares the scan's address slice")
	}
	p := &linkv1.Probe{Target: "gw:443", Reachable: true}
	links = Compute(testConfig("gw:443"), []hostnet.Iface{wlan}, nil, map[string]*linkv1.Probe{"wifi": p})
	links[0].Probe.Reachable = false
	if !p.Reachable {
		t.Fatal("Compute shares the prober's result")
	}
}

func TestComputeSteer(t *testing.T) {
	c := testConfig()
	c.Routing.Table, c.Routing.Mark, c.Routing.Ports, c.Routing.PortsPerLink = 300, 0x100, 50000, 100
	links := Compute(c, nil, nil, nil)
	want := []*linkv1.Steer{
		{Mark: 0x100, Table: 300, Ports: [2]uint16{50000, 50099}},
		{Mark: 0x101, Table: 301, Ports: [2]uint16{50100, 50199}},
		{Mark: 0x102, Table: 302, Ports: [2]uint16{50200, 50299}},
	}
	for i, l := range links {
		if d := cmp.Diff(want[i], l.Steer); d != "" {
			t.Errorf("link %d %s steer (-want +got):\n%s", i, l.Name, d)
		}
	}
	// The defaults reach the top of the port space with room to spare.
	links = Compute(testConfig(), nil, nil, nil)
	if s := links[2].Steer; s.Ports != [2]uint16{63000, 63999} || s.Mark != config.DefaultMark+2 || s.Table != config.DefaultTable+2 {
		t.Errorf("default steer of the third link: %+v", s)
	}
	// The last possible range ends at 65535 without wrapping.
	c.Routing.Ports, c.Routing.PortsPerLink = 65536-3*16, 16
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if s := Compute(c, nil, nil, nil)[2].Steer; s.Ports != [2]uint16{65520, 65535} {
		t.Errorf("the last range: %v", s.Ports)
	}

	c.Routing.Disabled = true
	for _, l := range Compute(c, []hostnet.Iface{upIface("wlan0")}, nil, nil) {
		if l.Steer != nil {
			t.Errorf("routing disabled, yet link %s has steer %+v", l.Name, l.Steer)
		}
	}
}

func TestSameLinks(t *testing.T) {
	base := Compute(testConfig("gw:443"), []hostnet.Iface{upIface("wlan0"), upIface("wwan0")}, nil,
		map[string]*linkv1.Probe{"wifi": {Target: "gw:443", Reachable: true, RTT: "1ms"}})
	clone := func() []linkv1.Link {
		out := Compute(testConfig("gw:443"), []hostnet.Iface{upIface("wlan0"), upIface("wwan0")}, nil,
			map[string]*linkv1.Probe{"wifi": {Target: "gw:443", Reachable: true, RTT: "1ms"}})
		return out
	}
	if !sameLinks(base, clone()) {
		t.Fatal("a view differs from itself")
	}
	c := clone()
	c[0].Probe.RTT, c[0].Probe.Checked = "9ms", c[0].Probe.Checked.Add(1)
	c[1].Since = c[1].Since.Add(1)
	if !sameLinks(base, c) {
		t.Fatal("probe timings and Since must not count as changes")
	}
	for name, change := range map[string]func(l []linkv1.Link){
		"up":        func(l []linkv1.Link) { l[0].Up = false },
		"reason":    func(l []linkv1.Link) { l[2].Reason = "x" },
		"metered":   func(l []linkv1.Link) { l[0].Metered = true },
		"roaming":   func(l []linkv1.Link) { l[1].Roaming = true },
		"source":    func(l []linkv1.Link) { l[0].Source = "override" },
		"address":   func(l []linkv1.Link) { l[0].Interfaces[0].Addrs = []string{"198.51.100.2/24"} },
		"gateway":   func(l []linkv1.Link) { l[0].Interfaces[0].Gateway = "" },
		"carrier":   func(l []linkv1.Link) { l[1].Interfaces[0].Running = false },
		"probe":     func(l []linkv1.Link) { l[0].Probe.Reachable = false },
		"new probe": func(l []linkv1.Link) { l[1].Probe = &linkv1.Probe{Reachable: true} },
		"steer":     func(l []linkv1.Link) { l[1].Steer.Mark++ },
		"no steer":  func(l []linkv1.Link) { l[1].Steer = nil },
		"one less":  func(l []linkv1.Link) {},
	} {
		c := clone()
		change(c)
		if name == "one less" {
			c = c[:2]
		}
		if sameLinks(base, c) {
			t.Errorf("a change of %s is not a change", name)
		}
	}
}
