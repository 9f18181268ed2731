package config

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseEmptyIsDefaults(t *testing.T) {
	for _, in := range []string{"", "\n", "# only a comment\n", "---\n"} {
		c, err := Parse([]byte(in))
		if err != nil {
			t.Fatalf("Parse(%q): %v", in, err)
		}
		want := Config{
			Listen:  DefaultListen,
			Links:   DefaultRules,
			Probe:   Probe{Interval: Duration(5 * time.Second), Timeout: Duration(2 * time.Second)},
			Routing: Routing{Table: DefaultTable, Mark: DefaultMark, Priority: DefaultPriority, Ports: DefaultPorts, PortsPerLink: DefaultPortsPerLink},
			Rescan:  Duration(10 * time.Second),
		}
		if d := cmp.Diff(want, *c); d != "" {
			t.Fatalf("Parse(%q) (-want +got):\n%s", in, d)
		}
	}
	// The defaults are a copy: a config's rules are its own.
	c, _ := Parse(nil)
	c.Links[0].Name = "changed"
	if DefaultRules[0].Name != "wifi" {
		t.Fatal("SetDefaults shares DefaultRules with the config")
	}
}

func TestParse(t *testing.T) {
	c, err := Parse([]byte(`
listen: 10.0.0.5:15021
links:
  - {match: "wlan*", class: wifi}
  - {name: modem, type: wwan, class: cellular, metered: true}
  - {name: modem, match: "usb*", class: cellular, metered: true, roaming: true}
probe: {targets: ["gw.example:443"], interval: 1s, timeout: 500ms}
routing: {table: 300, mark: 0x100, priority: 100, ports: 50000, portsPerLink: 100}
rescan: 30s
`))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Listen: "10.0.0.5:15021",
		Links: []Rule{
			{Name: "wifi", Match: "wlan*", Class: "wifi"},
			{Name: "modem", Type: "wwan", Class: "cellular", Metered: true},
			{Name: "modem", Match: "usb*", Class: "cellular", Metered: true, Roaming: true},
		},
		Probe:   Probe{Targets: []string{"gw.example:443"}, Interval: Duration(time.Second), Timeout: Duration(500 * time.Millisecond)},
		Routing: Routing{Table: 300, Mark: 0x100, Priority: 100, Ports: 50000, PortsPerLink: 100},
		Rescan:  Duration(30 * time.Second),
	}
	if d := cmp.Diff(want, *c); d != "" {
		t.Fatalf("(-want +got):\n%s", d)
	}
	if got := LinkNames(c.Links); !cmp.Equal(got, []string{"wifi", "modem"}) {
		t.Fatalf("LinkNames = %v", got)
	}
}

// parseErrors are files Parse must refuse, each with the field its error
// must name (and, where it matters, what else it must say).
var parseErrors = []struct {
	name, in string
	want     []string
}{
	{"listen without port", "listen: 127.0.0.1\n", []string{"listen:", "host:port"}},
	{"class missing", "links: [{match: eth0}]\n", []string{"links[0].class: is required"}},
	{"class invalid", "links: [{match: eth0, class: Ethernet}]\n", []string{"links[0].class:", `"Ethernet"`}},
	{"name invalid", "links: [{name: My_Link, class: wifi}]\n", []string{"links[0].name:", `"My_Link"`}},
	{"name too long", "links: [{name: " + strings.Repeat("a", 64) + ", class: wifi}]\n", []string{"links[0].name:"}},
	{"bad glob", "links: [{match: \"wlan[\", class: wifi}]\n", []string{"links[0].match:", "not a glob"}},
	{"one link two classes", "links: [{name: up, match: a*, class: wifi}, {name: up, match: b*, class: cellular}]\n",
		[]string{"links[1].class:", "link up is already of class wifi"}},
	{"probe target", "probe: {targets: [gw.example]}\n", []string{"probe.targets[0]:", "host:port"}},
	{"probe interval", "probe: {interval: 10ms}\n", []string{"probe.interval:"}},
	{"probe timeout", "probe: {timeout: -1s}\n", []string{"probe.timeout:"}},
	{"rescan", "rescan: 1ms\n", []string{"rescan:"}},
	{"bad duration", "rescan: soon\n", []string{"line 1", `"soon" is not a duration`}},
	{"table negative", "routing: {table: -1}\n", []string{"routing.table: -1"}},
	{"table too high", "routing: {table: 4294967290}\n", []string{"routing.table:"}},
	{"table onto main", "routing: {table: 252}\n", []string{"routing.table: 252"}}, // 3 links: 252, 253 (default), 254 (main)
	{"ports per link", "routing: {portsPerLink: 8}\n", []string{"routing.portsPerLink: 8"}},
	{"ports below 1024", "routing: {ports: 80}\n", []string{"routing.ports: 80"}},
	{"ports overflow", "routing: {ports: 64000}\n", []string{"routing.ports: 64000", "3 links of 1000 ports"}},
	{"ports overflow by one", "routing: {ports: 62537}\n", []string{"routing.ports: 62537"}},
	{"priority after main", "routing: {priority: 32766}\n", []string{"routing.priority: 32766"}},
	{"priority negative", "routing: {priority: -5}\n", []string{"routing.priority: -5"}},
	{"mark wraps", "routing: {mark: 0xffffffff}\n", []string{"routing.mark:"}}, // link 1 would get mark 0
	{"unknown field", "links: [{name: a, class: wifi, metred: true}]\n", []string{"metred"}},
	{"not a mapping", "- a\n- b\n", []string{"cannot unmarshal"}},
}

func TestParseErrors(t *testing.T) {
	for _, tt := range parseErrors {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in))
			if err == nil {
				t.Fatalf("Parse(%q) accepted", tt.in)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Parse(%q) = %q, want it to say %q", tt.in, err, w)
				}
			}
		})
	}
}

func TestParseLimits(t *testing.T) {
	for _, in := range []string{
		"routing: {ports: 62536}\n", // 3 links end at 65535
		"routing: {table: 250}\n",   // 250-252: below default, main and local
		"routing: {table: 256}\n",
		"routing: {mark: 0xfffffffd}\n", // 3 links: ...fd, fe, ff
		"routing: {priority: 32765}\n",
		"probe: {interval: 100ms}\n",
		"listen: \"[::1]:0\"\n",
		"probe: {targets: [\"[fd00::1]:443\"]}\n",
	} {
		if _, err := Parse([]byte(in)); err != nil {
			t.Errorf("Parse(%q): %v", in, err)
		}
	}
}

func TestValidateNamesEveryField(t *testing.T) {
	c := &Config{Listen: "nope", Links: []Rule{{Match: "[", Class: ""}}}
	c.SetDefaults()
	c.Routing.Priority = 40000
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate accepted")
	}
	for _, f := range []string{"listen:", "links[0].class:", "links[0].match:", "routing.priority:"} {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("error %q does not name %s", err, f)
		}
	}
	// A name taken from a missing class is the class's fault, said once.
	if strings.Contains(err.Error(), "links[0].name") {
		t.Errorf("error %q blames the name for the missing class", err)
	}
}

func TestClassify(t *testing.T) {
	rules := []Rule{
		{Name: "wifi", Type: "wlan", Class: "wifi"},
		{Name: "wifi", Match: "wlan*", Class: "wifi"},
		{Name: "cellular", Type: "wwan", Class: "cellular", Metered: true},
		{Name: "sat", Match: "sat?", Type: "device", Class: "satellite", Metered: true, Roaming: true},
		{Name: "ethernet", Match: "eth[0-3]", Class: "ethernet"},
		{Name: "lab", Match: "eth*", Class: "ethernet"},
	}
	tests := []struct {
		name string
		f    Facts
		want string // link name; "" for none
	}{
		{"glob", Facts{Name: "wlan1", Type: "veth"}, "wifi"},
		{"type over name", Facts{Name: "wlp2s0", Type: "wlan"}, "wifi"},
		{"type case-insensitive", Facts{Name: "x", Type: "WWAN"}, "cellular"},
		{"first rule wins", Facts{Name: "wlan0", Type: "wwan"}, "wifi"},
		{"name and type both", Facts{Name: "sat0", Type: "device"}, "sat"},
		{"name without type", Facts{Name: "sat0", Type: "veth"}, ""},
		{"type without name", Facts{Name: "sat10", Type: "device"}, ""},
		{"character class", Facts{Name: "eth2", Type: "device"}, "ethernet"},
		{"later rule", Facts{Name: "eth7", Type: "device"}, "lab"},
		{"no match", Facts{Name: "lo", Type: "device"}, ""},
		{"pod veth", Facts{Name: "cali1234", Type: "veth"}, ""},
		{"empty", Facts{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, ok := Classify(rules, tt.f)
			if ok != (tt.want != "") || r.Name != tt.want {
				t.Fatalf("Classify(%+v) = %q, %v; want %q", tt.f, r.Name, ok, tt.want)
			}
		})
	}
	if r, ok := Classify(nil, Facts{Name: "eth0"}); ok {
		t.Fatalf("no rules matched %+v", r)
	}
	if r, ok := Classify([]Rule{{Name: "any", Class: "ethernet"}}, Facts{Name: "x", Type: "y"}); !ok || r.Name != "any" {
		t.Fatal("a rule without match and type must match every interface")
	}
}

func TestDefaultRules(t *testing.T) {
	for _, tt := range []struct {
		f    Facts
		want string
	}{
		{Facts{Name: "wlp3s0", Type: "wlan"}, "wifi"},
		{Facts{Name: "wlan0", Type: "device"}, "wifi"},
		{Facts{Name: "wwp0s20", Type: "wwan"}, "cellular"},
		{Facts{Name: "wwan0", Type: "device"}, "cellular"},
		{Facts{Name: "eth0", Type: "device"}, "ethernet"},
		{Facts{Name: "enp1s0", Type: "device"}, "ethernet"},
		{Facts{Name: "docker0", Type: "bridge"}, ""},
	} {
		r, ok := Classify(DefaultRules, tt.f)
		if ok != (tt.want != "") || r.Name != tt.want {
			t.Errorf("Classify(DefaultRules, %+v) = %q; want %q", tt.f, r.Name, tt.want)
		}
		if tt.want == "cellular" && !r.Metered {
			t.Errorf("%s: cellular must be metered by default", tt.f.Name)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add("")
	f.Add(`
listen: 10.0.0.5:15021
links:
  - {match: "wlan*", class: wifi}
  - {name: modem, type: wwan, class: cellular, metered: true}
probe: {targets: ["gw.example:443"], interval: 1s, timeout: 500ms}
routing: {table: 300, mark: 0x100, priority: 100, ports: 50000, portsPerLink: 100}
rescan: 30s
`)
	f.Add("routing: {disabled: true, ports: 65000, portsPerLink: 16}\nlinks: [{class: a}, {class: b}]\n")
	f.Add("a: &x [*x]\n")
	f.Add("links: [null, {}]\n")
	for _, tt := range parseErrors {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		c, err := Parse([]byte(in))
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted config fails Validate: %v", err)
		}
		before := *c
		before.Links = append([]Rule(nil), c.Links...)
		c.SetDefaults()
		if d := cmp.Diff(before, *c); d != "" {
			t.Fatalf("SetDefaults is not idempotent:\n%s", d)
		}
		// What the agent numbers from an accepted config fits its types:
		// ports in uint16, marks that do not wrap to 0 (no mark), tables
		// clear of the kernel's own.
		r := c.Routing
		names := LinkNames(c.Links)
		for i := range names {
			if last := r.Ports + (i+1)*r.PortsPerLink - 1; r.Ports < 1024 || last > 65535 {
				t.Fatalf("link %d's ports %d-%d", i, r.Ports+i*r.PortsPerLink, last)
			}
			if m := uint64(r.Mark) + uint64(i); m == 0 || m > 0xffffffff {
				t.Fatalf("link %d's mark %#x", i, m)
			}
			if tb := r.Table + i; tb < 1 || tb == 253 || tb == 254 || tb == 255 {
				t.Fatalf("link %d's table %d", i, tb)
			}
		}
		for _, rl := range c.Links {
			if rl.Name == "" || rl.Class == "" {
				t.Fatalf("rule without name or class accepted: %+v", rl)
			}
			Classify(c.Links, Facts{Name: rl.Match, Type: rl.Type})
		}
	})
}
