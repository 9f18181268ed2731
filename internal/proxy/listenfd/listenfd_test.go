package listenfd

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	const pid, ppid = 100, 50
	for _, tc := range []struct {
		name    string
		env     map[string]string
		n       int
		names   []string
		wantErr string
	}{
		{name: "none", env: nil},
		{name: "systemd", env: map[string]string{EnvFDs: "2", EnvPID: "100", EnvNames: "mesh:admin"}, n: 2, names: []string{"mesh", "admin"}},
		{name: "systemd without names", env: map[string]string{EnvFDs: "1", EnvPID: "100"}, n: 1, names: []string{"unknown"}},
		{name: "systemd, another process's", env: map[string]string{EnvFDs: "2", EnvPID: "101", EnvNames: "mesh:admin"}},
		{name: "supervisor", env: map[string]string{EnvFDs: "3", EnvParent: "50", EnvNames: "mesh:dns:dns"}, n: 3, names: []string{"mesh", "dns", "dns"}},
		{name: "a grandchild of the supervisor", env: map[string]string{EnvFDs: "3", EnvParent: "49", EnvNames: "mesh:dns:dns"}},
		{name: "no pid at all", env: map[string]string{EnvFDs: "1", EnvNames: "mesh"}},
		{name: "names do not match the count", env: map[string]string{EnvFDs: "2", EnvPID: "100", EnvNames: "mesh"}, wantErr: "names 1 sockets"},
		{name: "bad count", env: map[string]string{EnvFDs: "two", EnvPID: "100"}, wantErr: "want a count"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, names, err := parse(func(k string) string { return tc.env[k] }, pid, ppid)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if n != tc.n || !cmp.Equal(names, tc.names) {
				t.Errorf("parse = %d %q, want %d %q", n, names, tc.n, tc.names)
			}
		})
	}
}

func TestHandDropsInheritedVariables(t *testing.T) {
	env, extra := Hand([]string{"PATH=/bin", "LISTEN_PID=1", "LISTEN_FDS=9", "LISTEN_FDNAMES=x", "MISAKI_LISTEN_PARENT=1"},
		[]File{{Name: Mesh, File: os.Stdin}, {Name: Admin, File: os.Stdout}})
	want := []string{"PATH=/bin", "LISTEN_FDS=2", "LISTEN_FDNAMES=mesh:admin", fmt.Sprintf("MISAKI_LISTEN_PARENT=%d", os.Getpid())}
	if diff := cmp.Diff(want, env); diff != "" {
		t.Errorf("env (-want +got):\n%s", diff)
	}
	if len(extra) != 2 || extra[0] != os.Stdin || extra[1] != os.Stdout {
		t.Errorf("extra files = %v", extra)
	}
}

// helperEnv makes the test binary, started again, act as the child.
const helperEnv = "LISTENFD_TEST_CHILD"

// TestHandOverToChild hands a TCP listener and a UDP socket (under one
// name, as DNS has them) to a real child process, which serves one
// connection and one datagram on them.
func TestHandOverToChild(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	lf, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	pf, err := pc.(*net.UDPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	// The datagram socket first: the child must find the stream one by
	// its type, not its place.
	env, extra := Hand(os.Environ(), []File{{Name: DNS, File: pf}, {Name: DNS, File: lf}, {Name: Admin, File: pf}})
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperChild$")
	cmd.Env = append(env, helperEnv+"=1")
	cmd.ExtraFiles = extra
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	lf.Close()
	pf.Close()
	// The parent's own listener is open still; the child takes the
	// connection only if it accepts on the same socket: close ours.
	ln.Close()

	lines := bufio.NewScanner(out)
	if !lines.Scan() || lines.Text() != "ready" {
		t.Fatalf("child: %q", lines.Text())
	}
	c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	got, _ := io.ReadAll(c)
	c.Close()
	if string(got) != "stream" {
		t.Errorf("the TCP connection got %q from the child", got)
	}
	u, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	u.SetDeadline(time.Now().Add(10 * time.Second))
	u.Write([]byte("ping"))
	buf := make([]byte, 64)
	n, err := u.Read(buf)
	if err != nil || string(buf[:n]) != "datagram ping" {
		t.Errorf("the datagram's answer: %q, %v", buf[:n], err)
	}
	for lines.Scan() {
		if l := lines.Text(); l != "ok" {
			t.Errorf("child: %s", l)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("child: %v", err)
	}
}

// TestHelperChild is the child of TestHandOverToChild.
func TestHelperChild(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		t.Skip("the child of TestHandOverToChild")
	}
	fail := func(format string, args ...any) {
		fmt.Printf(format+"\n", args...)
		os.Exit(1)
	}
	s, err := FromEnv()
	if err != nil || s == nil {
		fail("FromEnv: %v %v", s, err)
	}
	for _, k := range []string{EnvFDs, EnvNames, EnvParent} {
		if v, ok := os.LookupEnv(k); ok {
			fail("%s=%s is still set", k, v)
		}
	}
	if got := fmt.Sprint(s.Names()); got != "[dns dns admin]" {
		fail("names %s", got)
	}
	if ln, err := s.Listener(Mesh); ln != nil || err != nil {
		fail("a mesh listener that was not handed over: %v %v", ln, err)
	}
	if ln, err := s.Listener(Admin); ln != nil || err != nil {
		fail("admin is a datagram socket, yet Listener took it: %v %v", ln, err)
	}
	ln, err := s.Listener(DNS)
	if err != nil || ln == nil {
		fail("Listener(dns): %v %v", ln, err)
	}
	pc, err := s.PacketConn(DNS)
	if err != nil || pc == nil {
		fail("PacketConn(dns): %v %v", pc, err)
	}
	if got := fmt.Sprint(s.Close()); got != "[admin]" {
		fail("Close closed %s", got)
	}
	fmt.Println("ready")
	c, err := ln.Accept()
	if err != nil {
		fail("accept: %v", err)
	}
	io.WriteString(c, "stream")
	c.Close()
	buf := make([]byte, 64)
	n, from, err := pc.ReadFrom(buf)
	if err != nil {
		fail("read: %v", err)
	}
	pc.WriteTo(append([]byte("datagram "), buf[:n]...), from)
	fmt.Println("ok")
	os.Exit(0)
}
