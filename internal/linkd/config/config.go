// Package config is the node link agent's configuration file: the rules
// that classify the host's interfaces into links (name patterns, interface
// types, classes, the metered and roaming flags), the gateway to probe over
// each link, and the policy routing the agent installs. The vehicle
// integrator writes it; the chart puts it in a ConfigMap (docs/links.md).
//
// Classify is the pure part: interface facts in, the link they belong to
// out. Rules are tried in order; the first that matches an interface takes
// it; interfaces no rule matches (lo, pods' veths, cni0) are not links.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the agent's file. The zero value of a field means its default.
type Config struct {
	// Listen is where proxies on the node read link state (GET /v1/links)
	// and the connectivity manager sets overrides. The agent runs with the
	// host's network; the chart binds it to the node's address. Default
	// 127.0.0.1:15021.
	Listen string `yaml:"listen"`
	// Links are the classification rules, tried in order. Default: wlan*
	// and Wi-Fi devices are wifi, wwan* and modems are cellular and
	// metered, eth* and en* are ethernet.
	Links []Rule `yaml:"links"`
	// Probe checks that the gateway answers over each link.
	Probe Probe `yaml:"probe"`
	// Routing is the policy routing that steers sockets onto one link.
	Routing Routing `yaml:"routing"`
	// Rescan is how often the host is read again when no netlink event
	// came, as a safety net. Default 10s.
	Rescan Duration `yaml:"rescan"`
}

// Rule classifies interfaces into one link.
type Rule struct {
	// Name is the link's name (in the proxies' routes status, metrics and
	// overrides). Default: the rule's class.
	Name string `yaml:"name"`
	// Match is a glob over interface names (wlan*, wwan0). Empty: any name.
	Match string `yaml:"match"`
	// Type, when set, matches only interfaces of this kernel type: wlan or
	// wwan (the device's uevent DEVTYPE), or a link kind (veth, dummy,
	// vlan, device for plain hardware). Empty: any type.
	Type string `yaml:"type"`
	// Class is ethernet, wifi, cellular, satellite or a class of your own;
	// routes name classes in offline.links. Required.
	Class string `yaml:"class"`
	// Metered marks a link that costs per byte.
	Metered bool `yaml:"metered"`
	// Roaming marks a link on a foreign network.
	Roaming bool `yaml:"roaming"`
}

// Probe configures the reachability checks.
type Probe struct {
	// Targets are host:port addresses (the cloud gateway) dialled over
	// each link with TCP. Empty: no probes; a link is up when an
	// interface of it is.
	Targets []string `yaml:"targets"`
	// Interval between checks of a link. Default 5s.
	Interval Duration `yaml:"interval"`
	// Timeout of one dial. Default 2s.
	Timeout Duration `yaml:"timeout"`
}

// Routing configures the policy routing: per link a routing table with
// only that link's routes, a rule sending packets with the link's firewall
// mark to it, and a rule sending TCP packets from the link's source-port
// range to it (the mark does not survive the veth between a pod and the
// host; the source port does, see docs/links.md).
type Routing struct {
	// Disabled leaves the host's routing alone: proxies learn link state
	// but cannot be steered.
	Disabled bool `yaml:"disabled"`
	// Table is the first link's routing table; link i uses Table+i.
	// Default 15100.
	Table int `yaml:"table"`
	// Mark is the first link's firewall mark; link i uses Mark+i.
	// Default 0x4d5a0000 ("MZ").
	Mark uint32 `yaml:"mark"`
	// Priority is the rules' priority (lower is earlier; the main table's
	// rule is 32766). Default 15100.
	Priority int `yaml:"priority"`
	// Ports is the first source port given to links; link i owns
	// [Ports+i*PortsPerLink, Ports+(i+1)*PortsPerLink). It must lie outside
	// the host's and the pods' ephemeral range
	// (net.ipv4.ip_local_port_range, 32768-60999 by default). Default 61000.
	Ports int `yaml:"ports"`
	// PortsPerLink bounds a pod's concurrent upstream connections over one
	// link (per destination, since a port is reused across destinations).
	// Default 1000.
	PortsPerLink int `yaml:"portsPerLink"`
}

// Defaults.
const (
	DefaultListen       = "127.0.0.1:15021"
	DefaultTable        = 15100
	DefaultMark         = 0x4d5a0000
	DefaultPriority     = 15100
	DefaultPorts        = 61000
	DefaultPortsPerLink = 1000
)

// DefaultRules classify the usual names and device types.
var DefaultRules = []Rule{
	{Name: "wifi", Type: "wlan", Class: "wifi"},
	{Name: "wifi", Match: "wlan*", Class: "wifi"},
	{Name: "cellular", Type: "wwan", Class: "cellular", Metered: true},
	{Name: "cellular", Match: "wwan*", Class: "cellular", Metered: true},
	{Name: "ethernet", Match: "eth*", Class: "ethernet"},
	{Name: "ethernet", Match: "en*", Class: "ethernet"},
}

// Duration is a time.Duration written as "5s".
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalYAML parses a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration; write it like 5s or 500ms", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// Load reads, defaults and validates the file at path.
func Load(p string) (*Config, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", p, err)
	}
	return c, nil
}

// Parse decodes YAML (unknown fields are errors), sets defaults and
// validates.
func Parse(b []byte) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) { // empty: all defaults
		return nil, err
	}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// SetDefaults fills zero fields with their defaults.
func (c *Config) SetDefaults() {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if len(c.Links) == 0 {
		c.Links = slices.Clone(DefaultRules)
	}
	for i := range c.Links {
		if c.Links[i].Name == "" {
			c.Links[i].Name = c.Links[i].Class
		}
	}
	if c.Probe.Interval == 0 {
		c.Probe.Interval = Duration(5 * time.Second)
	}
	if c.Probe.Timeout == 0 {
		c.Probe.Timeout = Duration(2 * time.Second)
	}
	if c.Rescan == 0 {
		c.Rescan = Duration(10 * time.Second)
	}
	r := &c.Routing
	if r.Table == 0 {
		r.Table = DefaultTable
	}
	if r.Mark == 0 {
		r.Mark = DefaultMark
	}
	if r.Priority == 0 {
		r.Priority = DefaultPriority
	}
	if r.Ports == 0 {
		r.Ports = DefaultPorts
	}
	if r.PortsPerLink == 0 {
		r.PortsPerLink = DefaultPortsPerLink
	}
}

// Validate checks the config without I/O; its error names every field at
// fault.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen", "%q is not host:port: %v", c.Listen, err)
	}
	classes := map[string]string{} // link name → class
	for i, r := range c.Links {
		f := fmt.Sprintf("links[%d]", i)
		classOK := validName(r.Class)
		switch {
		case r.Class == "":
			bad(f+".class", "is required (ethernet, wifi, cellular, satellite or your own)")
		case !classOK:
			bad(f+".class", "%q: use lower-case letters, digits and '-', at most 63", r.Class)
		}
		// A name defaulted from a bad class is the class's fault, said once.
		if !validName(r.Name) && (classOK || r.Name != r.Class) {
			bad(f+".name", "%q: use lower-case letters, digits and '-', at most 63", r.Name)
		}
		if _, err := path.Match(r.Match, ""); err != nil {
			bad(f+".match", "%q is not a glob: %v", r.Match, err)
		}
		if prev, ok := classes[r.Name]; ok && prev != r.Class {
			bad(f+".class", "link %s is already of class %s; rules for one link must agree", r.Name, prev)
		}
		classes[r.Name] = r.Class
	}
	for i, t := range c.Probe.Targets {
		if _, _, err := net.SplitHostPort(t); err != nil {
			bad(fmt.Sprintf("probe.targets[%d]", i), "%q is not host:port: %v", t, err)
		}
	}
	if c.Probe.Interval.D() < 100*time.Millisecond {
		bad("probe.interval", "must be at least 100ms")
	}
	if c.Probe.Timeout.D() <= 0 {
		bad("probe.timeout", "must be positive")
	}
	if c.Rescan.D() < 100*time.Millisecond {
		bad("rescan", "must be at least 100ms")
	}
	r := c.Routing
	n := len(LinkNames(c.Links))
	// Tables 253-255 are the kernel's default, main and local.
	if r.Table < 1 || r.Table+n > 0xfffffff0 || (r.Table <= 255 && r.Table+n-1 > 252) {
		bad("routing.table", "%d: choose a free range of tables above 255", r.Table)
	}
	// Link i's mark is Mark+i; one that wrapped to 0 would be no mark, and
	// its rule would take every unmarked packet.
	if uint64(r.Mark)+uint64(max(n, 1)-1) > 0xffffffff {
		bad("routing.mark", "%#x: %d links' marks must not pass 0xffffffff", r.Mark, n)
	}
	if r.PortsPerLink < 16 {
		bad("routing.portsPerLink", "%d: give each link at least 16 ports", r.PortsPerLink)
	}
	if r.Ports < 1024 || r.Ports+n*r.PortsPerLink > 65536 {
		bad("routing.ports", "%d: %d links of %d ports must fit in 1024-65535", r.Ports, n, r.PortsPerLink)
	}
	if r.Priority < 1 || r.Priority >= 32766 {
		bad("routing.priority", "%d: must be between 1 and 32765 (before the main table)", r.Priority)
	}
	return errors.Join(errs...)
}

func validName(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for _, r := range s {
		if !(r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z') {
			return false
		}
	}
	return true
}

// LinkNames are the links the rules define, in the order of their first
// rule: link i's table, mark and ports are numbered by this order.
func LinkNames(rules []Rule) []string {
	var names []string
	for _, r := range rules {
		if !slices.Contains(names, r.Name) {
			names = append(names, r.Name)
		}
	}
	return names
}

// Facts are what the kernel says of one interface.
type Facts struct {
	Name string
	// Type is wlan or wwan (uevent DEVTYPE), else the link kind (veth,
	// dummy, ...), else "device".
	Type string
}

// Classify returns the first rule matching the interface, or false when
// no rule does (the interface is not a link).
func Classify(rules []Rule, f Facts) (Rule, bool) {
	for _, r := range rules {
		if r.Match != "" {
			if ok, _ := path.Match(r.Match, f.Name); !ok {
				continue
			}
		}
		if r.Type != "" && !strings.EqualFold(r.Type, f.Type) {
			continue
		}
		return r, true
	}
	return Rule{}, false
}
