// Package pgtest starts a real PostgreSQL server for tests: initdb into a
// temporary directory, postgres on a free loopback port with fsync off, a
// DSN to it, and a clean stop when the test ends. It uses Debian's server
// binaries (/usr/lib/postgresql/<version>/bin, package postgresql, which
// .ci/run installs) and, when the test runs as root as CI does, runs them
// as the postgres user: PostgreSQL refuses to run as root.
//
// It is written here rather than taken from a library because the ones
// that exist download a server build at run time (embedded-postgres) or
// need a Docker engine (testcontainers), and neither works on this
// project's machines.
package pgtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// BinDir returns the directory of the newest installed PostgreSQL server
// binaries, or "" if there are none.
func BinDir() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int { return version(a) - version(b) })
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "postgres")); err == nil {
			return dirs[i]
		}
	}
	return ""
}

func version(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// Start starts a server for t and returns a DSN for its postgres
// database. Without PostgreSQL installed the test is skipped, unless CI is
// set: there .ci/run has installed it, and its absence is a failure.
func Start(t testing.TB) string {
	t.Helper()
	bin := BinDir()
	if bin == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("pgtest: no PostgreSQL server under /usr/lib/postgresql; .ci/run installs the postgresql package")
		}
		t.Skip("pgtest: PostgreSQL not installed (apt-get install postgresql; .ci/run does)")
	}
	cred, err := credential()
	if err != nil {
		t.Fatal(err)
	}
	root, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	data, sock := filepath.Join(root, "data"), filepath.Join(root, "run")
	for _, d := range []string{data, sock} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if cred != nil {
		// The server's user must reach and own its directories.
		if err := os.Chmod(root, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, d := range []string{data, sock} {
			if err := os.Chown(d, int(cred.Uid), int(cred.Gid)); err != nil {
				t.Fatal(err)
			}
		}
	}
	run := func(name string, args ...string) *exec.Cmd {
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true}
		cmd.Dir = root
		return cmd
	}
	if out, err := run("initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("pgtest: initdb: %v\n%s", err, out)
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(root, "postgres.log"))
	if err != nil {
		t.Fatal(err)
	}
	srv := run("postgres", "-D", data, "-p", strconv.Itoa(port), "-k", sock,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
		"-c", "full_page_writes=off", "-c", "max_connections=200")
	srv.Stdout, srv.Stderr = logFile, logFile
	if err := srv.Start(); err != nil {
		t.Fatalf("pgtest: postgres: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }()
	t.Cleanup(func() {
		srv.Process.Signal(syscall.SIGINT) // fast shutdown
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			srv.Process.Kill()
			<-exited
		}
		logFile.Close()
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if err := waitReady(addr, exited); err != nil {
		log, _ := os.ReadFile(logFile.Name())
		t.Fatalf("pgtest: %v\n%s", err, log)
	}
	return fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", addr)
}

// credential is the postgres user's when running as root, else nil (run as
// the caller).
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgtest: running as root, and PostgreSQL will not: %w (the postgresql package creates the postgres user)", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitReady waits until the server answers a query on addr, or exits. An
// open port is not enough: until recovery is over, the server refuses
// sessions ("the database system is starting up").
func waitReady(addr string, exited <-chan error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dsn := "postgres://postgres@" + addr + "/postgres?sslmode=disable&connect_timeout=5"
	var last error
	for {
		conn, err := pgx.Connect(ctx, dsn)
		if err == nil {
			err = conn.Ping(ctx)
			conn.Close(context.Background())
			if err == nil {
				return nil
			}
		}
		last = err
		select {
		case err := <-exited:
			return fmt.Errorf("postgres exited before it was ready: %v", err)
		case <-ctx.Done():
			return fmt.Errorf("postgres not ready after 60s: %w", last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
