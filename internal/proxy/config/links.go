package config

import (
	"fmt"
	"net"
	"path"
	"time"
)

// Link is one network path of the vehicle.
type Link struct {
	// Name identifies the link in the admin API and metrics.
	Name string `yaml:"name"`
	// Match is a glob over kernel interface names (wlan*, wwan0). Empty means
	// the link is driven only through the admin API (PUT /v1/links/{name}).
	Match string `yaml:"match"`
	// Class is ethernet, wifi, cellular, satellite or a name of your own.
	Class string `yaml:"class"`
	// Metered marks a link that costs per byte.
	Metered bool `yaml:"metered"`
	// Roaming marks a link roaming on a foreign network.
	Roaming bool `yaml:"roaming"`
}

// Link classes known to the proxy. Others are accepted if they are valid
// names, so a fleet may add its own (for example "v2x").
const (
	ClassEthernet  = "ethernet"
	ClassWiFi      = "wifi"
	ClassCellular  = "cellular"
	ClassSatellite = "satellite"
)

// validateLinks checks the links list: valid, unique names, valid
// classes and globs.
func validateLinks(links []Link, bad report) {
	seen := map[string]bool{}
	for i, l := range links {
		f := fmt.Sprintf("links[%d]", i)
		if !validName(l.Name) {
			bad(f+".name", "%q is not a valid name; use lower-case letters, digits and '-' (at most 63)", l.Name)
		} else if seen[l.Name] {
			bad(f+".name", "%q is used by another link; names must be unique", l.Name)
		}
		seen[l.Name] = true
		if !validName(l.Class) {
			bad(f+".class", "%q is not a valid class; use ethernet, wifi, cellular, satellite or a lower-case name of your own", l.Class)
		}
		if _, err := path.Match(l.Match, ""); err != nil {
			bad(f+".match", "%q is not a valid glob: %v", l.Match, err)
		}
	}
}

// LinkScan tunes the link monitor.
type LinkScan struct {
	// PollInterval is how often interfaces are rescanned when netlink events
	// are unavailable, and as a safety net when they are. Default 5s.
	PollInterval Duration `yaml:"pollInterval"`
}

// DefaultPollInterval is linkScan.pollInterval unless set.
const DefaultPollInterval = 5 * time.Second

func (l *LinkScan) setDefaults() {
	setDefault(&l.PollInterval, Duration(DefaultPollInterval))
}

func (l LinkScan) validate(bad report) {
	if l.PollInterval < 0 {
		bad("linkScan.pollInterval", "must not be negative")
	}
}

// LinkAgent locates the node link agent.
type LinkAgent struct {
	// Address is the agent's host:port. The injected sidecar gets it from
	// $MISAKI_LINK_AGENT (the node's address, by the downward API). Empty:
	// no agent; the proxy reads its own network namespace only.
	Address string `yaml:"address"`
}

func (l LinkAgent) validate(bad report) {
	if a := l.Address; a != "" {
		if _, _, err := net.SplitHostPort(a); err != nil {
			bad("linkAgent.address", "%q is not host:port (the node link agent's address): %v", a, err)
		}
	}
}
