package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/misaki-io/misaki/internal/waitfor"
)

// vehicleNode is a vehicle's node as network namespaces: the node (the
// host, with a Wi-Fi interface wlan0, a metered modem wwan0 and a workshop
// Ethernet eth0 whose cable is out), a pod joined to the node by a veth as
// a CNI would join it, and the cloud at the far end of every link. The
// node forwards and masquerades the pod's traffic, and its main table
// prefers the modem, so a packet that escapes steering takes the modem.
type vehicleNode struct {
	t                *testing.T
	node, pod, cloud *cloudNS
	linkdAddr        string
	client           *http.Client // dials from inside the pod
	mu               sync.Mutex   // guards seen
	seen             []seenRequest
}

type seenRequest struct {
	id, host, from string // from: the link address the cloud saw
	bytes          int
}

const (
	cloudIP  = "10.77.9.1"
	wlanAddr = "10.77.1.2" // the node's end of wlan0; the cloud's is .1
	wwanAddr = "10.77.2.2"
	nodePod  = "10.77.5.1" // the node's end of the pod's veth
)

func newVehicleNode(t *testing.T) *vehicleNode {
	t.Helper()
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil && os.Geteuid() == 0 {
			t.Skipf("needs %s (iproute2, nftables; .ci/run installs them)", tool)
		}
	}
	_, sid := testID(7)
	v := &vehicleNode{t: t,
		node:  newCloudNS(t, "misaki-vn"+sid),
		pod:   newCloudNS(t, "misaki-vp"+sid),
		cloud: newCloudNS(t, "misaki-vc"+sid),
	}
	ip := v.node.ip
	n, c, p := v.node.name, v.cloud.name, v.pod.name
	for i, l := range []struct{ dev, far string }{{"wlan0", "wlanc"}, {"wwan0", "wwanc"}, {"eth0", "ethc"}} {
		ip("-n", n, "link", "add", l.dev, "type", "veth", "peer", "name", l.far, "netns", c)
		ip("-n", n, "addr", "add", fmt.Sprintf("10.77.%d.2/24", i+1), "dev", l.dev)
		ip("-n", c, "addr", "add", fmt.Sprintf("10.77.%d.1/24", i+1), "dev", l.far)
		ip("-n", c, "link", "set", l.far, "up")
		if l.dev != "eth0" { // the workshop cable is out
			ip("-n", n, "link", "set", l.dev, "up")
		}
	}
	ip("-n", c, "addr", "add", cloudIP+"/32", "dev", "lo")
	ip("-n", n, "route", "add", "default", "via", "10.77.2.1", "dev", "wwan0", "metric", "10")
	ip("-n", n, "route", "add", "default", "via", "10.77.1.1", "dev", "wlan0", "metric", "20")
	// The pod, as a CNI plugs it in.
	ip("-n", n, "link", "add", "pod0", "type", "veth", "peer", "name", "eth0", "netns", p)
	ip("-n", n, "addr", "add", nodePod+"/24", "dev", "pod0")
	ip("-n", n, "link", "set", "pod0", "up")
	ip("-n", p, "addr", "add", "10.77.5.2/24", "dev", "eth0")
	ip("-n", p, "link", "set", "eth0", "up")
	ip("-n", p, "route", "add", "default", "via", nodePod)
	v.run("ip", "netns", "exec", n, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	v.run("ip", "netns", "exec", n, "nft", `table ip nat { chain post { type nat hook postrouting priority 100; oifname { "wlan0", "wwan0", "eth0" } masquerade; }; }`)

	// The cloud service: it records which link each request came over.
	v.cloud.serve(cloudIP+":8080", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		from, _, _ := net.SplitHostPort(r.RemoteAddr)
		v.mu.Lock()
		v.seen = append(v.seen, seenRequest{id: r.Header.Get("X-Req-Id"), host: r.Host, from: from, bytes: len(b)})
		v.mu.Unlock()
		fmt.Fprint(w, "ok")
	}))
	v.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialInNetns(ctx, v.pod.path(), network, addr)
		},
		DisableKeepAlives: true,
	}}
	return v
}

func (v *vehicleNode) run(args ...string) {
	v.t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		v.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// startLinkd runs the node link agent in the node's namespace.
func (v *vehicleNode) startLinkd(cfg string) *logBuffer {
	v.t.Helper()
	path := filepath.Join(v.t.TempDir(), "linkd.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		v.t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", v.node.name, filepath.Join(binDir, "misaki-linkd"), "--config", path, "--node", "car-1")
	logs := &logBuffer{}
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		v.t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs.WriteString(sc.Text() + "\n")
		}
	}()
	v.t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		if v.t.Failed() {
			v.t.Logf("misaki-linkd logs:\n%s", logs.String())
		}
	})
	v.linkdAddr = nodePod + ":15021"
	// Healthy: its first scan is published (before it, GET /v1/links has
	// no links yet).
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return dialInNetns(ctx, v.node.path(), network, addr)
	}}}
	waitfor.True(v.t, "misaki-linkd healthy", func() bool {
		resp, err := c.Get("http://" + v.linkdAddr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return logs
}

// proxyConfig is the configuration of a proxy in the pod: it learns the
// links from the node's agent, spools to spoolDir, and has routes (each a
// cloudRoute).
func (v *vehicleNode) proxyConfig(spoolDir string, routes ...string) string {
	return fmt.Sprintf(`
listen: 127.0.0.1:0
admin: 127.0.0.1:0
linkAgent: {address: %s}
spool: {dir: %s}
routes:
`, v.linkdAddr, spoolDir) + strings.Join(routes, "")
}

// cloudRoute is a route of proxyConfig's to the cloud service, with a TCP
// probe and offline, the route's offline policy (YAML flow mapping).
func cloudRoute(name, offline string) string {
	return fmt.Sprintf(`  - name: %s
    hosts: [%s.cloud]
    upstream: http://%s:8080
    probe: {type: tcp, interval: 5s, backoff: {initial: 50ms, max: 200ms}}
    offline: %s
`, name, name, cloudIP, offline)
}

// startProxy runs misaki-proxy with cfg in the pod's namespace.
func (v *vehicleNode) startProxy(cfg string) *runningProxy {
	v.t.Helper()
	return startProxyBinary(v.t, cfg, "ip", "netns", "exec", v.pod.name)
}

// wifiDown takes the node's Wi-Fi interface down.
func (v *vehicleNode) wifiDown() {
	v.t.Helper()
	v.node.ip("-n", v.node.name, "link", "set", "wlan0", "down")
}

// wifiUp brings the node's Wi-Fi interface back, and its default route, as
// its DHCP client would.
func (v *vehicleNode) wifiUp() {
	v.t.Helper()
	v.node.ip("-n", v.node.name, "link", "set", "wlan0", "up")
	v.node.ip("-n", v.node.name, "route", "add", "default", "via", "10.77.1.1", "dev", "wlan0", "metric", "20")
}

// request sends a request to the pod's proxy from inside the pod.
func (v *vehicleNode) request(p *runningProxy, method, host, id string, body []byte) (int, string) {
	req, _ := http.NewRequest(method, "http://"+p.mesh+"/", bytes.NewReader(body))
	req.Host = host
	req.Header.Set("X-Req-Id", id)
	req.Header.Set("Idempotency-Key", id)
	resp, err := v.client.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header.Get("Misaki-Delivery")
}

// from returns the link address the cloud saw request id come from.
func (v *vehicleNode) from(id string) (string, int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, s := range v.seen {
		if s.id == id {
			return s.from, s.bytes
		}
	}
	return "", 0
}

// received is what the cloud's end of a link has received, in bytes: the
// counter on the far side of the veth.
func (v *vehicleNode) received(far string) int64 {
	v.t.Helper()
	out, err := exec.Command("ip", "-n", v.cloud.name, "-s", "-j", "link", "show", far).Output()
	if err != nil {
		v.t.Fatalf("ip -s link show %s: %v", far, err)
	}
	var links []struct {
		Stats struct {
			RX struct {
				Bytes int64 `json:"bytes"`
			} `json:"rx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		v.t.Fatalf("ip -s -j link show %s: %v %s", far, err, out)
	}
	return links[0].Stats.RX.Bytes
}

// admin reads a JSON document from the proxy's admin API, from the pod.
func (v *vehicleNode) admin(p *runningProxy, path string, into any) {
	v.t.Helper()
	resp, err := v.client.Get("http://" + p.admin + path)
	if err != nil {
		v.t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
		v.t.Fatal(err)
	}
}

type adminRoute struct {
	Name   string `json:"name"`
	Usable bool   `json:"usable"`
	Reason string `json:"reason"`
	Link   string `json:"link"`
	Budget *struct {
		DailyBytes int64 `json:"dailyBytes"`
		Exceeded   bool  `json:"exceeded"`
	} `json:"budget"`
}

func (v *vehicleNode) route(p *runningProxy, name string) adminRoute {
	var body struct {
		Routes []adminRoute `json:"routes"`
	}
	v.admin(p, "/v1/routes", &body)
	for _, r := range body.Routes {
		if r.Name == name {
			return r
		}
	}
	v.t.Fatalf("no route %s", name)
	return adminRoute{}
}

func (v *vehicleNode) spooled(p *runningProxy) int {
	var body struct {
		Routes []struct {
			Depth int `json:"depth"`
		} `json:"routes"`
	}
	v.admin(p, "/v1/spool", &body)
	n := 0
	for _, r := range body.Routes {
		n += r.Depth
	}
	return n
}

const linkdConfig = `
listen: ` + nodePod + `:15021
links:
  - {name: wifi, match: wlan0, class: wifi}
  - {name: modem, match: wwan0, class: cellular, metered: true}
  - {name: workshop, match: eth0, class: ethernet}
probe: {targets: ["` + cloudIP + `:8080"], interval: 300ms, timeout: 500ms}
rescan: 1s
`

// TestNodeLinkAgentSteersPodTraffic is the vehicle's day: on a node whose
// Wi-Fi goes down while the modem stays up, a Wi-Fi-only route holds and
// then spools while a telemetry route keeps flowing over the modem, the
// bytes of each leave by the interface the policy allows (counted on the
// far side of each link), and when Wi-Fi returns the spool drains over
// Wi-Fi. The proxy runs in a pod's namespace, where it sees none of the
// node's interfaces and has no CAP_NET_ADMIN to speak of: it learns the
// links from misaki-linkd and is steered by its policy routing.
func TestNodeLinkAgentSteersPodTraffic(t *testing.T) {
	v := newVehicleNode(t)
	v.startLinkd(linkdConfig)
	p := v.startProxy(v.proxyConfig(t.TempDir(),
		cloudRoute("telemetry", "{hold: 20s}"),
		cloudRoute("video", "{hold: 1s, spool: true, links: [wifi]}")))

	waitfor.True(t, "video steered onto the node's Wi-Fi", func() bool {
		r := v.route(p, "video")
		return r.Usable && r.Link == "wifi"
	})
	var links struct {
		Agent struct {
			Address   string `json:"address"`
			Connected bool   `json:"connected"`
		} `json:"agent"`
		Links []struct {
			Name  string `json:"name"`
			Agent bool   `json:"agent"`
		} `json:"links"`
	}
	v.admin(p, "/v1/links", &links)
	if !links.Agent.Connected || links.Agent.Address != v.linkdAddr || len(links.Links) != 3 || !links.Links[0].Agent {
		t.Fatalf("the proxy's GET /v1/links: %+v; want the agent connected and its three links", links)
	}
	if code, d := v.request(p, "GET", "telemetry.cloud", "t1", nil); code != 200 || d != "direct" {
		t.Fatalf("telemetry: %d %s", code, d)
	}
	if from, _ := v.from("t1"); from != wwanAddr {
		t.Fatalf("telemetry came from %q; want the modem %s (the node's main table prefers it)", from, wwanAddr)
	}
	if code, d := v.request(p, "GET", "video.cloud", "v1", nil); code != 200 || d != "direct" {
		t.Fatalf("video: %d %s", code, d)
	}
	if from, _ := v.from("v1"); from != wlanAddr {
		t.Fatalf("video came from %q; want Wi-Fi %s although the node prefers the modem", from, wlanAddr)
	}

	// Wi-Fi goes down. The video (a large upload) waits and is spooled;
	// telemetry keeps flowing over the modem; the modem does not carry
	// the video's bytes.
	modemBefore := v.received("wwanc")
	v.wifiDown()
	waitfor.True(t, "the proxy sees Wi-Fi down", func() bool { return !v.route(p, "video").Usable })
	video := bytes.Repeat([]byte("v"), 256<<10)
	if code, d := v.request(p, "POST", "video.cloud", "v2", video); code != 202 || d != "spooled" {
		t.Fatalf("video during the outage: %d %s; want 202 spooled", code, d)
	}
	for i := range 5 {
		id := fmt.Sprintf("t-out-%d", i)
		if code, _ := v.request(p, "POST", "telemetry.cloud", id, []byte(`{"speed":42}`)); code != 200 {
			t.Fatalf("telemetry during the outage: %d", code)
		}
		if from, _ := v.from(id); from != wwanAddr {
			t.Fatalf("telemetry during the outage came from %q", from)
		}
	}
	if from, _ := v.from("v2"); from != "" {
		t.Fatalf("the video reached the cloud from %s during the Wi-Fi outage", from)
	}
	if d := v.received("wwanc") - modemBefore; d >= int64(len(video)) {
		t.Fatalf("the modem carried %d bytes during the outage: the video's %d leaked onto it", d, len(video))
	}
	if n := v.spooled(p); n != 1 {
		t.Fatalf("%d requests spooled; want the video", n)
	}

	// Wi-Fi returns (and its DHCP client puts the default route back): the
	// spool drains over Wi-Fi.
	wifiBefore := v.received("wlanc")
	v.wifiUp()
	waitfor.True(t, "the spooled video delivered", func() bool { from, _ := v.from("v2"); return from != "" })
	if from, n := v.from("v2"); from != wlanAddr || n != len(video) {
		t.Fatalf("the spooled video came from %s with %d bytes; want Wi-Fi %s with %d", from, n, wlanAddr, len(video))
	}
	if d := v.received("wlanc") - wifiBefore; d < int64(len(video)) {
		t.Fatalf("Wi-Fi carried %d bytes; the video alone is %d", d, len(video))
	}
	waitfor.True(t, "the spool empty", func() bool { return v.spooled(p) == 0 })
}

// TestNodeLinkAgentMeteredBudget: a bulk route may use any link but has a
// daily allowance on metered ones. With Wi-Fi up it rides Wi-Fi (and
// spends nothing); with only the modem it rides the modem until the
// allowance is spent, then spools; the count outlives a restart of the
// proxy; Wi-Fi's return drains the spool over Wi-Fi. Then the gateway
// stops answering over Wi-Fi although the interface stays up: the agent's
// probe takes the link down, and the bulk route goes back to the modem's
// (exhausted) allowance, so it spools instead of leaking.
func TestNodeLinkAgentMeteredBudget(t *testing.T) {
	v := newVehicleNode(t)
	v.startLinkd(linkdConfig)
	cfg := v.proxyConfig(t.TempDir(), cloudRoute("bulk", "{hold: 1s, spool: true, budget: {daily: 64KiB}}"))
	p := v.startProxy(cfg)
	waitfor.True(t, "bulk steered onto Wi-Fi, the unmetered link", func() bool {
		r := v.route(p, "bulk")
		return r.Usable && r.Link == "wifi"
	})
	chunk := bytes.Repeat([]byte("b"), 40<<10)
	if code, _ := v.request(p, "POST", "bulk.cloud", "b1", chunk); code != 200 {
		t.Fatalf("bulk over Wi-Fi: %d", code)
	}
	if from, _ := v.from("b1"); from != wlanAddr {
		t.Fatalf("bulk came from %q; want Wi-Fi", from)
	}

	// Only the modem: the route spends its allowance there, then stops.
	v.wifiDown()
	waitfor.True(t, "bulk steered onto the modem", func() bool { return v.route(p, "bulk").Link == "modem" })
	for _, id := range []string{"b2", "b3"} {
		if code, d := v.request(p, "POST", "bulk.cloud", id, chunk); code != 200 || d != "direct" {
			t.Fatalf("bulk %s over the modem: %d %s", id, code, d)
		}
		if from, _ := v.from(id); from != wwanAddr {
			t.Fatalf("bulk %s came from %q; want the modem", id, from)
		}
	}
	waitfor.True(t, "the allowance spent", func() bool {
		r := v.route(p, "bulk")
		return !r.Usable && r.Budget != nil && r.Budget.Exceeded && strings.Contains(r.Reason, "budget")
	})
	if r := v.route(p, "bulk"); r.Budget.DailyBytes < int64(2*len(chunk)) {
		t.Fatalf("the modem carried two %d-byte requests; the budget counted %d", len(chunk), r.Budget.DailyBytes)
	}
	if code, d := v.request(p, "POST", "bulk.cloud", "b4", chunk); code != 202 || d != "spooled" {
		t.Fatalf("bulk over budget: %d %s; want 202 spooled", code, d)
	}

	// A restart keeps the count: the route stays off the modem.
	p.cmd.Process.Signal(os.Interrupt)
	p.cmd.Wait()
	p = v.startProxy(cfg)
	waitfor.True(t, "the restarted proxy connected to the agent", func() bool {
		var body struct {
			Links []struct{ Name string } `json:"links"`
		}
		v.admin(p, "/v1/links", &body)
		return len(body.Links) == 3
	})
	if r := v.route(p, "bulk"); r.Usable || r.Budget == nil || !r.Budget.Exceeded {
		t.Fatalf("after a restart the bulk route is %+v; want it still over budget", r)
	}

	// Wi-Fi returns: the spooled request goes over Wi-Fi.
	v.wifiUp()
	waitfor.True(t, "the spooled bulk request delivered", func() bool { from, _ := v.from("b4"); return from != "" })
	if from, _ := v.from("b4"); from != wlanAddr {
		t.Fatalf("the spooled request came from %q; want Wi-Fi", from)
	}

	// The gateway stops answering over Wi-Fi (a captive portal, a dead
	// access point): the agent's probe finds out, and the route neither
	// uses Wi-Fi nor overspends on the modem.
	v.run("ip", "netns", "exec", v.cloud.name, "nft", `table ip portal { chain in { type filter hook input priority 0; iifname "wlanc" drop; }; }`)
	waitfor.True(t, "the proxy sees Wi-Fi down by the agent's probe", func() bool {
		var body struct {
			Links []struct {
				Name, Reason string
				Up           bool
			} `json:"links"`
		}
		v.admin(p, "/v1/links", &body)
		for _, l := range body.Links {
			if l.Name == "wifi" {
				return !l.Up && strings.Contains(l.Reason, "unreachable")
			}
		}
		return false
	})
	if code, d := v.request(p, "POST", "bulk.cloud", "b5", chunk); code != 202 || d != "spooled" {
		t.Fatalf("bulk with Wi-Fi unreachable and the modem's allowance spent: %d %s; want 202 spooled", code, d)
	}
}

// TestNetworkManagerDispatcher runs contrib/networkmanager/90-misaki-linkd
// as NetworkManager would, with an nmcli that reports a metered hotspot
// behind a captive portal, against the real agent.
func TestNetworkManagerDispatcher(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("needs curl")
	}
	v := newVehicleNode(t)
	v.startLinkd(linkdConfig)
	dir := t.TempDir()
	connectivity := filepath.Join(dir, "connectivity")
	nmcli := "#!/bin/sh\n" +
		`case "$2" in GENERAL.METERED) echo "yes (guessed)";; GENERAL.IP4-CONNECTIVITY) cat ` + connectivity + `;; esac` + "\n"
	if err := os.WriteFile(filepath.Join(dir, "nmcli"), []byte(nmcli), 0o755); err != nil {
		t.Fatal(err)
	}
	script, err := filepath.Abs("../contrib/networkmanager/90-misaki-linkd")
	if err != nil {
		t.Fatal(err)
	}
	dispatch := func(conn string, args ...string) {
		t.Helper()
		if err := os.WriteFile(connectivity, []byte(conn+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("ip", append([]string{"netns", "exec", v.node.name, script}, args...)...)
		cmd.Env = append(os.Environ(), "PATH="+dir+":"+os.Getenv("PATH"), "MISAKI_NM_CONF=/nonexistent",
			"MISAKI_LINKD="+v.linkdAddr, "MISAKI_LINKS=wlan0=wifi wwan0=modem")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("dispatcher %v: %v\n%s", args, err, out)
		}
	}
	wifi := func() (up, metered bool, source string) {
		c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialInNetns(ctx, v.node.path(), network, addr)
		}}}
		resp, err := c.Get("http://" + v.linkdAddr + "/v1/links")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var snap struct {
			Links []struct {
				Name, Source string
				Up, Metered  bool
			}
		}
		json.NewDecoder(resp.Body).Decode(&snap)
		for _, l := range snap.Links {
			if l.Name == "wifi" {
				return l.Up, l.Metered, l.Source
			}
		}
		t.Fatal("no wifi link")
		return
	}
	waitfor.True(t, "Wi-Fi up by the agent's own view", func() bool { up, _, _ := wifi(); return up })

	dispatch("4 (full)", "wlan0", "up")
	if up, metered, source := wifi(); !up || !metered || source != "kernel" {
		t.Fatalf("after up on a metered hotspot: up %v metered %v source %s; want up, metered, the agent's own view", up, metered, source)
	}
	dispatch("2 (portal)", "", "connectivity-change")
	if up, _, source := wifi(); up || source != "override" {
		t.Fatalf("behind a captive portal: up %v source %s; want down by override", up, source)
	}
	dispatch("4 (full)", "", "connectivity-change")
	if up, _, source := wifi(); !up || source != "kernel" {
		t.Fatalf("after the portal: up %v source %s", up, source)
	}
	dispatch("4 (full)", "eth0", "up") // an interface the map does not name: nothing to say
}
