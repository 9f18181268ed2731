// Package v1 is the wire format of the node link agent (misaki-linkd): the
// host's links as the agent classified them, with the routing each one is
// steered by, as served at GET /v1/links and streamed at
// GET /v1/links?watch=true (one Snapshot per line, newline-delimited JSON).
// The proxy's link monitor (internal/proxy/link) is the client; it imports
// nothing else from the agent, so the edge binary stays small.
package v1

import "time"

// Snapshot is the agent's whole view, sent at once on every change.
type Snapshot struct {
	// Version increases with every change the agent publishes; a restarted
	// agent starts again at 1, so clients compare Agent too.
	Version uint64 `json:"version"`
	// Agent identifies one run of the agent (node name and start time).
	Agent string `json:"agent"`
	Links []Link `json:"links"`
}

// Link is one classified link of the host.
type Link struct {
	// Name is the link's name from the classification rules (or the
	// interface's name when the rule gives none).
	Name string `json:"name"`
	// Class is ethernet, wifi, cellular, satellite or a class of the
	// integrator's own.
	Class   string `json:"class"`
	Metered bool   `json:"metered"`
	Roaming bool   `json:"roaming"`
	// Up is the agent's verdict: an interface of the link is up, has
	// carrier and an address, and (when probes are configured) the gateway
	// was reached over it; or an override says so.
	Up bool `json:"up"`
	// Reason says why a link is down, for people.
	Reason string `json:"reason,omitempty"`
	// Source says what decided Up: kernel (interfaces and probes) or
	// override (the connectivity manager, PUT /v1/links/{name}).
	Source     string      `json:"source"`
	Interfaces []Interface `json:"interfaces,omitempty"`
	Probe      *Probe      `json:"probe,omitempty"`
	// Steer is how a socket asks to leave by this link; absent when the
	// agent does not install policy routing.
	Steer *Steer    `json:"steer,omitempty"`
	Since time.Time `json:"since"`
}

// Interface is a kernel interface matched by the link's rule.
type Interface struct {
	Name string `json:"name"`
	// Type is the kernel's device type: wlan, wwan (from the device's
	// uevent) or the link kind (veth, dummy, ...), else "device".
	Type    string   `json:"type"`
	Up      bool     `json:"up"`
	Running bool     `json:"running"`
	Addrs   []string `json:"addrs,omitempty"`
	// Gateway is the next hop of the interface's default route, if any.
	Gateway string `json:"gateway,omitempty"`
}

// Usable reports whether the interface can carry traffic: administratively
// up, with carrier, and with an address that is not link-local.
func (i Interface) Usable() bool { return i.Up && i.Running && len(i.Addrs) > 0 }

// Probe is the last reachability check of the gateway over the link.
type Probe struct {
	Target    string    `json:"target"`
	Reachable bool      `json:"reachable"`
	RTT       string    `json:"rtt,omitempty"`
	Error     string    `json:"error,omitempty"`
	Checked   time.Time `json:"checked"`
}

// Steer is the policy routing the agent installed for the link: packets
// carrying Mark (SO_MARK, for processes in the host's network namespace)
// or leaving a pod from a TCP source port in Ports are routed by Table,
// which holds only this link's routes and ends in "unreachable", so they
// never fall back to another link.
type Steer struct {
	Mark  uint32    `json:"mark"`
	Table int       `json:"table"`
	Ports [2]uint16 `json:"ports"`
}

// Override is what the vehicle's connectivity manager sends with
// PUT /v1/links/{name}: the same shape as the proxy's admin API.
type Override struct {
	// State is up, down or auto (back to the agent's own view).
	State string `json:"state"`
	// Metered and Roaming, when present, replace the rule's flags.
	Metered *bool `json:"metered,omitempty"`
	Roaming *bool `json:"roaming,omitempty"`
}
