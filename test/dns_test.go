package test

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// dig runs dig (Debian dnsutils) against addr and returns its output.
func dig(t *testing.T, addr string, args ...string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	out, err := exec.Command("dig", append([]string{"@" + host, "-p", port, "+tries=1", "+time=5"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("dig %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// The binary's DNS server, black-box with dig: mesh names, forwarded
// names, and after the upstream is gone and the proxy restarted, the
// cached names as stale answers (EDE 3).
func TestDNSOnlineOfflineAndAfterRestart(t *testing.T) {
	if _, err := exec.LookPath("dig"); err != nil {
		t.Skip("dig is not installed (Debian dnsutils; .ci/run installs it)")
	}
	// A real upstream resolver: www.example.com A 192.0.2.1, TTL 2.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := startResolver(t, pc, "", net.IPv4(192, 0, 2, 1), 2)

	dir := t.TempDir()
	cfg := fmt.Sprintf(`listen: 127.0.0.1:0
admin: 127.0.0.1:0
dns:
  listen: 127.0.0.1:0
  upstreams: [%s]
  cacheFile: %s
  staleAfter: 500ms
  saveInterval: 1h
routes:
  - name: telemetry
    hosts: [telemetry.cloud.misaki]
    upstream: http://127.0.0.1:1
    probe: {type: none}
`, pc.LocalAddr(), filepath.Join(dir, "dns-cache"))

	p := startProxyBinary(t, cfg)
	if p.dns == "" {
		t.Fatalf("no DNS address in the listening line; logs:\n%s", p.logs.String())
	}
	if out := dig(t, p.dns, "+short", "telemetry.cloud.misaki", "A"); strings.TrimSpace(out) != "127.0.0.1" {
		t.Fatalf("mesh name: %q", out)
	}
	if out := dig(t, p.dns, "+short", "www.example.com", "A"); strings.TrimSpace(out) != "192.0.2.1" {
		t.Fatalf("forwarded name: %q", out)
	}
	if out := dig(t, p.dns, "+tcp", "+short", "www.example.com", "A"); strings.TrimSpace(out) != "192.0.2.1" {
		t.Fatalf("over TCP: %q", out)
	}

	// The upstream goes; the proxy stops (saving its cache) and starts again.
	up.Shutdown()
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.cmd.Wait()
	if _, err := os.Stat(filepath.Join(dir, "dns-cache")); err != nil {
		t.Fatalf("no cache file after shutdown: %v\n%s", err, p.logs.String())
	}
	// Real time passes (the proxy binary runs on the wall clock) beyond the
	// answer's TTL (2 s): the answer after the restart is a stale one.
	time.Sleep(2500 * time.Millisecond)
	p = startProxyBinary(t, cfg)
	out := dig(t, p.dns, "www.example.com", "A")
	if !strings.Contains(out, "192.0.2.1") || !strings.Contains(out, "EDE: 3 (Stale Answer)") {
		t.Fatalf("offline after a restart, want the stale answer with EDE 3:\n%s", out)
	}
	if out := dig(t, p.dns, "never-resolved.example.com", "A"); !strings.Contains(out, "status: SERVFAIL") {
		t.Fatalf("a name never resolved, offline:\n%s", out)
	}
	if out := dig(t, p.dns, "+short", "telemetry.cloud.misaki", "A"); strings.TrimSpace(out) != "127.0.0.1" {
		t.Fatalf("mesh name offline: %q", out)
	}
}

// An app whose resolv.conf names only the proxy, as an injected pod's
// does: in a network namespace of its own, with /etc/netns/<ns>/resolv.conf
// (which `ip netns exec` mounts over /etc/resolv.conf) saying
// "nameserver 127.0.0.1", and the proxy on 127.0.0.1:53 there. The app is
// glibc (getent) and curl, through the system's resolver. It resolves a
// mesh name and an external name, and calls the mesh name through the
// proxy: online, then with the upstream resolver gone, then also after the
// proxy restarts.
func TestAppResolvesThroughResolvConf(t *testing.T) {
	n, id := testID(7)
	ns := newCloudNS(t, "misaki-app"+id)
	// A pod has an address besides loopback; without one, glibc's
	// getaddrinfo (AI_ADDRCONFIG) asks nothing for IPv4 names.
	ns.link("mapp"+id, "mappc"+id, fmt.Sprintf("10.193.%d", n%250))
	etc := "/etc/netns/" + ns.name
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(etc) })
	if err := os.WriteFile(etc+"/resolv.conf", []byte("nameserver 127.0.0.1\noptions timeout:3 attempts:1\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	// The cluster's resolver, in the namespace: www.example.com A
	// 192.0.2.7, TTL 1.
	var pc net.PacketConn
	if err := inNetns(ns.path(), func() (err error) { pc, err = net.ListenPacket("udp", "127.0.0.1:0"); return err }); err != nil {
		t.Fatal(err)
	}
	up := startResolver(t, pc, "www.example.com.", net.IPv4(192, 0, 2, 7), 1)
	// The service behind the mesh name.
	svc := ns.serve("127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "inventory via %s", r.Host)
	}))

	dir := t.TempDir()
	cfg := fmt.Sprintf(`listen: 127.0.0.1:8080
admin: 127.0.0.1:0
spool: {dir: %s}
dns:
  listen: 127.0.0.1:53
  upstreams: [%s]
  staleAfter: 300ms
routes:
  - name: inventory
    hosts: [inventory.mesh]
    upstream: http://%s
    probe: {type: none}
`, filepath.Join(dir, "spool"), pc.LocalAddr(), svc)
	app := func(args ...string) (string, error) {
		out, err := exec.Command("ip", append([]string{"netns", "exec", ns.name}, args...)...).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	resolves := func(when, name, want string) {
		t.Helper()
		out, err := app("getent", "ahostsv4", name)
		if err != nil || !strings.HasPrefix(out, want+" ") {
			t.Fatalf("%s: getent ahostsv4 %s = %q (%v), want %s", when, name, out, err, want)
		}
	}
	calls := func(when string) {
		t.Helper()
		out, err := app("curl", "-sS", "--max-time", "5", "http://inventory.mesh:8080/items")
		if err != nil || out != "inventory via inventory.mesh:8080" {
			t.Fatalf("%s: curl http://inventory.mesh:8080/items = %q (%v)", when, out, err)
		}
	}

	p := startProxyBinary(t, cfg, "ip", "netns", "exec", ns.name)
	resolves("online", "inventory.mesh", "127.0.0.1")
	resolves("online", "www.example.com", "192.0.2.7")
	calls("online")

	up.Shutdown() // offline: the resolver is gone
	// Real time passes (the proxy binary runs on the wall clock) beyond the
	// answer's TTL (1 s): the offline answers below are stale ones.
	time.Sleep(1200 * time.Millisecond)
	resolves("offline", "www.example.com", "192.0.2.7")
	resolves("offline", "inventory.mesh", "127.0.0.1")

	p.cmd.Process.Signal(syscall.SIGTERM) // the cache is written
	p.cmd.Wait()
	startProxyBinary(t, cfg, "ip", "netns", "exec", ns.name)
	resolves("offline after a restart", "www.example.com", "192.0.2.7")
	resolves("offline after a restart", "inventory.mesh", "127.0.0.1")
	calls("offline after a restart")
}

// startResolver serves DNS on pc until the test ends: A queries for name
// (any name when "") get ip with ttl; the rest, an empty answer.
func startResolver(t *testing.T, pc net.PacketConn, name string, ip net.IP, ttl uint32) *dns.Server {
	t.Helper()
	up := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if q := r.Question[0]; q.Qtype == dns.TypeA && (name == "" || strings.EqualFold(q.Name, name)) {
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl}, A: ip}}
		}
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	up.NotifyStartedFunc = func() { close(started) }
	go up.ActivateAndServe()
	<-started
	t.Cleanup(func() { up.Shutdown() })
	return up
}
