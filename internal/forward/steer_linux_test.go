package forward

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// portsSeen is an upstream on loopback that records the source port of
// every connection it accepts.
type portsSeen struct {
	*httptest.Server
	mu    sync.Mutex
	ports []int
}

func newPortsSeen(t *testing.T, h http.HandlerFunc) *portsSeen {
	t.Helper()
	if h == nil {
		h = func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			io.WriteString(w, "ok")
		}
	}
	u := &portsSeen{}
	u.Server = httptest.NewUnstartedServer(h)
	u.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s != http.StateNew {
			return
		}
		_, p, _ := net.SplitHostPort(c.RemoteAddr().String())
		n, _ := strconv.Atoi(p)
		u.mu.Lock()
		u.ports = append(u.ports, n)
		u.mu.Unlock()
	}
	u.Start()
	t.Cleanup(u.Close)
	return u
}

func (u *portsSeen) seen() []int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]int(nil), u.ports...)
}

// freshRange is a range of n source ports no socket holds, above the
// ephemeral range: ports of connections closed a moment ago (by this test
// or an earlier run) are still in TIME_WAIT.
func freshRange(t *testing.T, n int) [2]uint16 {
	t.Helper()
	const lo, hi = 61000, 65536
	for range 100 {
		first := lo + rand.IntN(hi-lo-n)
		free := true
		for p := first; p < first+n && free; p++ {
			free = bindable(p)
		}
		if free {
			return [2]uint16{uint16(first), uint16(first + n - 1)}
		}
	}
	t.Fatalf("no %d free ports in a row in %d-%d", n, lo, hi-1)
	return [2]uint16{}
}

func bindable(port int) bool {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	return unix.Bind(fd, &unix.SockaddrInet4{Port: port}) == nil
}

// A steered path binds every upstream connection to a source port of the
// link's range, on the fast path, through ReverseProxy and for probes.
func TestSteerBindsASourcePortInRange(t *testing.T) {
	up := newPortsSeen(t, nil)
	f := newForwarder(t, up.URL, nil)
	ports := freshRange(t, 16)
	if !f.SetPath(Path{Link: "modem", Mark: 0x4d5a0001, Ports: ports}) {
		t.Fatal("SetPath reported no change")
	}
	app := front(t, f)
	for i := range 6 {
		body := "small"
		if i%2 == 1 {
			body = strings.Repeat("x", fastBodyMax+1) // not the fast path
		}
		if resp, b := do(t, http.MethodPost, app+"/x", nil, body); resp.StatusCode != 200 || b != "ok" {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, b)
		}
		f.Close() // the next request dials anew
	}
	resp, err := f.Client().Get(f.BaseURL() + "/probe")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	seen := up.seen()
	if len(seen) < 7 {
		t.Fatalf("the upstream saw %d connections, want 7", len(seen))
	}
	for _, p := range seen {
		if p < int(ports[0]) || p > int(ports[1]) {
			t.Errorf("a connection came from port %d, outside %d-%d", p, ports[0], ports[1])
		}
	}

	// Back to the kernel's choice: an ephemeral port.
	if !f.SetPath(Path{}) {
		t.Fatal("SetPath to the zero path reported no change")
	}
	if f.SetPath(Path{}) {
		t.Fatal("SetPath to the same path reported a change")
	}
	do(t, http.MethodGet, app+"/x", nil, "")
	if seen := up.seen(); seen[len(seen)-1] >= int(ports[0]) && seen[len(seen)-1] <= int(ports[1]) {
		t.Errorf("an unsteered connection came from the link's range: %d", seen[len(seen)-1])
	}
}

// Connections to one destination at once take different ports: a port
// another connection holds is not bound again while a free one is left
// (with SO_REUSEADDR the bind would succeed and the connect fail). When
// the range is taken, the dial fails rather than leave from another port.
func TestSteerPortRange(t *testing.T) {
	for _, tc := range []struct {
		name         string
		width, dials int // ports in the range, connections held at once
	}{
		{"PicksAFreePort", 16, 16},
		{"RangeExhausted", 2, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ownPorts(t, func(ports func(n int) [2]uint16) error {
				up, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					return err
				}
				defer up.Close()
				f := newForwarder(t, "http://"+up.Addr().String(), nil)
				f.SetPath(Path{Link: "modem", Ports: ports(tc.width)})
				var conns []net.Conn
				defer func() {
					for _, c := range conns {
						c.Close()
					}
				}()
				for i := range tc.dials {
					c, err := f.Dial(context.Background(), "tcp", f.Addr())
					switch {
					case err == nil:
						conns = append(conns, c)
					case i < tc.width:
						return fmt.Errorf("connection %d of %d over %d ports: %w", i+1, tc.dials, tc.width, err)
					default:
						return nil // refused once the range is taken
					}
				}
				if tc.dials > tc.width {
					return fmt.Errorf("connection %d over a range of %d ports came from %s", tc.width+1, tc.width, conns[tc.width].LocalAddr())
				}
				return nil
			})
		})
	}
}

// ownPorts runs f where the ports it asks for are free: as root, on a
// thread in a network namespace of its own (whose port space is empty;
// f's sockets are the namespace's when f opens them on that thread), else
// with ranges found free in the test's namespace, where a busy host's
// TIME_WAIT sockets may hold them.
func ownPorts(t *testing.T, f func(ports func(n int) [2]uint16) error) {
	t.Helper()
	if os.Geteuid() != 0 {
		if err := f(func(n int) [2]uint16 { return freshRange(t, n) }); err != nil {
			t.Fatal(err)
		}
		return
	}
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("unshare: %w", err)
			return
		}
		if err := loUp(); err != nil {
			done <- err
			return
		}
		next := 62000
		done <- f(func(n int) [2]uint16 {
			next += n
			return [2]uint16{uint16(next - n), uint16(next - 1)}
		})
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func loUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	ifr.SetUint16(unix.IFF_UP | unix.IFF_LOOPBACK | unix.IFF_RUNNING)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	return nil
}

// A proxy without CAP_NET_ADMIN (an injected sidecar) steers by the port
// alone: the mark's EPERM is not a dial error.
func TestSteerWithoutCapNetAdmin(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("drops capabilities of a thread of a root process")
	}
	t.Cleanup(func() { markDenied.Store(false) })
	up := newPortsSeen(t, nil)
	f := newForwarder(t, up.URL, nil)
	ports := freshRange(t, 16)
	f.SetPath(Path{Link: "modem", Mark: 0x4d5a0001, Ports: ports})
	type result struct {
		c   net.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		// Capabilities are a thread's; this one is never handed back.
		runtime.LockOSThread()
		if err := dropCaps(unix.CAP_NET_ADMIN, unix.CAP_NET_RAW); err != nil {
			done <- result{err: err}
			return
		}
		c, err := f.Dial(context.Background(), "tcp", f.Addr())
		done <- result{c, err}
	}()
	r := <-done
	if r.err != nil {
		t.Fatalf("dial without CAP_NET_ADMIN: %v", r.err)
	}
	defer r.c.Close()
	if !markDenied.Load() {
		t.Fatal("the mark was set without CAP_NET_ADMIN")
	}
	if got := socketMark(t, r.c); got != 0 {
		t.Fatalf("SO_MARK = %#x", got)
	}
	_, p, _ := net.SplitHostPort(r.c.LocalAddr().String())
	if n, _ := strconv.Atoi(p); n < int(ports[0]) || n > int(ports[1]) {
		t.Fatalf("source port %d outside the link's range", n)
	}
}

func dropCaps(caps ...int) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return err
	}
	for _, c := range caps {
		data[c/32].Effective &^= 1 << (c % 32)
	}
	return unix.Capset(&hdr, &data[0])
}

func socketMark(t *testing.T, c net.Conn) int {
	t.Helper()
	var inner net.Conn = c
	for {
		u, ok := inner.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		inner = u.NetConn()
	}
	rc, err := inner.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var mark int
	var serr error
	rc.Control(func(fd uintptr) { mark, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK) })
	if serr != nil {
		t.Fatal(serr)
	}
	return mark
}

// The bytes of connections made over a metered link are counted, both
// ways, by link; those of other links are not.
func TestMeteredBytes(t *testing.T) {
	const respSize = 20 << 10
	up := newPortsSeen(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write([]byte(strings.Repeat("r", respSize)))
	})
	f := newForwarder(t, up.URL, nil)
	app := front(t, f)
	if n := f.MeteredBytes(); len(n) != 0 {
		t.Fatalf("before any connection: %v", n)
	}

	f.SetPath(Path{Link: "modem", Metered: true})
	for _, size := range []int{1000, 100 << 10} { // the fast path, then ReverseProxy
		body := strings.Repeat("b", size)
		if resp, b := do(t, http.MethodPost, app+"/upload", nil, body); resp.StatusCode != 200 || len(b) != respSize {
			t.Fatalf("%d bytes up: %d, %d bytes back", size, resp.StatusCode, len(b))
		}
		got := f.MeteredBytes()
		if len(got) != 1 || got["modem"] < int64(size+respSize) || got["modem"] > int64(size+respSize+2000) {
			t.Fatalf("after %d bytes up and %d down: %v", size, respSize, got)
		}
		if again := f.MeteredBytes(); again["modem"] != 0 {
			t.Fatalf("bytes counted twice: %v", again)
		}
	}

	// A connection that closes before the count is read is counted once.
	do(t, http.MethodPost, app+"/upload", nil, strings.Repeat("c", 5000))
	f.Close()
	if got := f.MeteredBytes(); got["modem"] < 5000+respSize {
		t.Fatalf("a closed connection's bytes: %v", got)
	}
	if got := f.MeteredBytes(); got["modem"] != 0 {
		t.Fatalf("a closed connection counted twice: %v", got)
	}

	// Over an unmetered link, nothing.
	f.SetPath(Path{Link: "wifi"})
	f.MeteredBytes() // what the metered connections carried until the switch
	do(t, http.MethodPost, app+"/upload", nil, strings.Repeat("d", 5000))
	f.Close()
	if got := f.MeteredBytes(); len(got) != 0 {
		t.Fatalf("an unmetered link counted: %v", got)
	}
}

// Many connections at once, some closing while the count is read: every
// byte is counted once (run with -race).
func TestMeteredBytesConcurrent(t *testing.T) {
	up := newPortsSeen(t, nil)
	f := newForwarder(t, up.URL, nil)
	f.SetPath(Path{Link: "modem", Metered: true})
	app := front(t, f)
	var total int64
	done := make(chan struct{})
	var counted sync.WaitGroup
	counted.Add(1)
	go func() {
		defer counted.Done()
		for {
			total += f.MeteredBytes()["modem"]
			select {
			case <-done:
				return
			default:
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 10 {
				req, _ := http.NewRequest(http.MethodPost, app+"/x", strings.NewReader(strings.Repeat("z", 3000)))
				req.Host = "svc.mesh"
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					errs <- err
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if j%3 == i%3 {
					f.Close()
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	f.Close()
	close(done)
	counted.Wait()
	total += f.MeteredBytes()["modem"]
	if min := int64(80 * 3000); total < min || total > min*2 {
		t.Fatalf("counted %d bytes for 80 requests of 3000 bytes", total)
	}
}

// A blocked path (no link the route may use is up) refuses to dial.
func TestBlockedPathRefusesDials(t *testing.T) {
	up := newPortsSeen(t, nil)
	f := newForwarder(t, up.URL, nil)
	f.SetPath(Path{Blocked: true})
	if c, err := f.Dial(context.Background(), "tcp", f.Addr()); !errors.Is(err, ErrNoLink) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("dial over a blocked path: %v", err)
	}
	if n := len(up.seen()); n != 0 {
		t.Fatal(fmt.Sprint("the upstream saw ", n, " connections"))
	}
}
