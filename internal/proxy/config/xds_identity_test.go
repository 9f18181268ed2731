package config

import (
	"strings"
	"testing"
)

// xds.identity: the certificate endpoint defaults to xds.server's host on
// port 15012; the token needs the controller's CA; errors name the field.
func TestXDSIdentity(t *testing.T) {
	const base = "spool: {dir: /tmp/x}\n"
	c, err := Parse([]byte(base + "xds: {server: \"misaki-controller.misaki-system.svc:15010\", node: a/b, caFile: /ca.pem, identity: {tokenFile: /token}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.XDS.Identity.Server; got != "misaki-controller.misaki-system.svc:15012" {
		t.Errorf("xds.identity.server defaults to %q", got)
	}
	c, err = Parse([]byte(base + "xds: {server: \"10.0.0.1:15010\", node: a/b, caFile: /ca.pem, identity: {tokenFile: /token, server: \"10.0.0.2:9000\"}}\n"))
	if err != nil || c.XDS.Identity.Server != "10.0.0.2:9000" {
		t.Errorf("xds.identity.server given: %q %v", c.XDS.Identity.Server, err)
	}
	for name, tc := range map[string]struct{ xds, want string }{
		"no CA":         {`{server: "127.0.0.1:1", node: a/b, identity: {tokenFile: /token}}`, "xds.caFile: is required with xds.identity"},
		"bad server":    {`{server: "127.0.0.1:1", node: a/b, caFile: /ca, identity: {tokenFile: /token, server: nope}}`, `xds.identity.server: "nope" is not host:port`},
		"no token":      {`{server: "127.0.0.1:1", node: a/b, caFile: /ca, identity: {server: "127.0.0.1:2"}}`, "xds.identity.tokenFile: is required"},
		"no xds.server": {`{identity: {tokenFile: /token}}`, "xds.identity: needs xds.server"},
		"unknown field": {`{server: "127.0.0.1:1", node: a/b, caFile: /ca, identity: {tokenfile: /token}}`, "tokenfile"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(base + "xds: " + tc.xds + "\n"))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse = %v, want it to say %q", err, tc.want)
			}
		})
	}
}
