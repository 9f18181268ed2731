package test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
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
	var asked atomic.Int64
	up := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		asked.Add(1)
		m := new(dns.Msg)
		m.SetReply(r)
		if q := r.Question[0]; q.Qtype == dns.TypeA {
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 2}, A: net.IPv4(192, 0, 2, 1)}}
		}
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	up.NotifyStartedFunc = func() { close(started) }
	go up.ActivateAndServe()
	<-started
	defer up.Shutdown()

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
	time.Sleep(2500 * time.Millisecond) // past the answer's TTL
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
