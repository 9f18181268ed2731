// Package pgtest starts a real PostgreSQL server for tests and benchmarks:
// initdb into a temporary directory, postgres on a free loopback port, a
// DSN to it, and a clean stop. Start does it for a test (fsync off, a
// skip when PostgreSQL is not installed, the stop when the test ends);
// StartServer does it for a program, such as bench/hubbench, with the
// settings it asks for. It uses Debian's server binaries
// (/usr/lib/postgresql/<version>/bin, package postgresql, which .ci/run
// installs) and, when it runs as root as CI does, runs them as the
// postgres user: PostgreSQL refuses to run as root.
//
// It is written here rather than taken from a library because the ones
// that exist download a server build at run time (embedded-postgres) or
// need a Docker engine (testcontainers), and neither works on this
// project's machines.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNotInstalled is StartServer's error when there are no PostgreSQL
// server binaries under /usr/lib/postgresql.
var ErrNotInstalled = errors.New("pgtest: no PostgreSQL server under /usr/lib/postgresql (apt-get install postgresql; .ci/run does)")

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
// database; the server stops when t ends. Without PostgreSQL installed the
// test is skipped, unless CI is set: there .ci/run has installed it, and
// its absence is a failure.
func Start(t testing.TB) string {
	t.Helper()
	s, err := StartServer(t.Context(), Options{})
	if errors.Is(err, ErrNotInstalled) {
		if os.Getenv("CI") != "" {
			t.Fatal("pgtest: no PostgreSQL server under /usr/lib/postgresql; .ci/run installs the postgresql package")
		}
		t.Skip("pgtest: PostgreSQL not installed (apt-get install postgresql; .ci/run does)")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s.DSN
}

// Options are what StartServer's server runs with. The zero value is
// Start's server.
type Options struct {
	// Settings are server settings (postgres -c name=value) that replace
	// or add to the defaults. The defaults trade durability for speed, as
	// a test's server does not outlive a crash: fsync=off,
	// synchronous_commit=off, full_page_writes=off; and
	// max_connections=200. A benchmark of durable commits sets fsync and
	// full_page_writes back to on. listen_addresses, port and
	// unix_socket_directories are StartServer's to choose.
	Settings map[string]string
}

var defaultSettings = map[string]string{
	"fsync":              "off",
	"synchronous_commit": "off",
	"full_page_writes":   "off",
	"max_connections":    "200",
}

// Validate reports a setting StartServer chooses itself.
func (o Options) Validate() error {
	for _, k := range []string{"listen_addresses", "port", "unix_socket_directories"} {
		if _, ok := o.Settings[k]; ok {
			return fmt.Errorf("pgtest: Options.Settings: %s is chosen by StartServer; remove it", k)
		}
	}
	return nil
}

// Server is a running PostgreSQL server. Stop it when done.
type Server struct {
	DSN string // its postgres database, as the postgres user, over loopback TCP
	PID int    // the postmaster's; the backends and workers are its children
	Dir string // the data directory, the socket and postgres.log; Stop removes it

	cmd      *exec.Cmd
	done     chan struct{} // closed when the postmaster has exited
	waitErr  error         // cmd.Wait's; read after done is closed
	stopOnce sync.Once
}

// StartServer initialises a database cluster in a new temporary
// directory, starts postgres on a free loopback port with opts, and waits
// until it answers a query (ctx bounds the wait, up to 60 s). The server
// runs in its own process group, so a terminal's ^C reaches only the
// caller, and until Stop, whatever happens to ctx. Without PostgreSQL
// installed the error is ErrNotInstalled.
func StartServer(ctx context.Context, opts Options) (*Server, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	bin := BinDir()
	if bin == "" {
		return nil, ErrNotInstalled
	}
	cred, err := credential()
	if err != nil {
		return nil, err
	}
	root, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	started := false
	defer func() {
		if !started {
			os.RemoveAll(root)
		}
	}()
	data, sock := filepath.Join(root, "data"), filepath.Join(root, "run")
	for _, d := range []string{data, sock} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return nil, fmt.Errorf("pgtest: %w", err)
		}
	}
	if cred != nil {
		// The server's user must reach and own its directories.
		if err := os.Chmod(root, 0o755); err != nil {
			return nil, fmt.Errorf("pgtest: %w", err)
		}
		for _, d := range []string{data, sock} {
			if err := os.Chown(d, int(cred.Uid), int(cred.Gid)); err != nil {
				return nil, fmt.Errorf("pgtest: %w", err)
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
		return nil, fmt.Errorf("pgtest: initdb: %v\n%s", err, out)
	}
	port, err := freePort()
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	logFile, err := os.Create(filepath.Join(root, "postgres.log"))
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	defer logFile.Close() // the server has its own descriptor
	args := []string{"-D", data, "-p", strconv.Itoa(port), "-k", sock, "-c", "listen_addresses=127.0.0.1"}
	settings := maps.Clone(defaultSettings)
	maps.Copy(settings, opts.Settings)
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		args = append(args, "-c", k+"="+settings[k])
	}
	cmd := run("postgres", args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("pgtest: postgres: %w", err)
	}
	started = true // Stop cleans up from here
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s := &Server{
		DSN: fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", addr),
		PID: cmd.Process.Pid,
		Dir: root,
		cmd: cmd, done: make(chan struct{}),
	}
	go func() {
		s.waitErr = cmd.Wait()
		close(s.done)
	}()
	if err := s.waitReady(ctx); err != nil {
		log, _ := os.ReadFile(logFile.Name())
		s.Stop()
		return nil, fmt.Errorf("pgtest: %v\n%s", err, log)
	}
	return s, nil
}

// Stop stops the server (a fast shutdown: SIGINT, then SIGKILL after
// 30 s), waits for it to exit and removes its directory. Calling it again
// does nothing.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		s.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-s.done:
		case <-time.After(30 * time.Second):
			s.cmd.Process.Kill()
			<-s.done
		}
		os.RemoveAll(s.Dir)
	})
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

// waitReady waits until the server answers a query, or exits. An open
// port is not enough: until recovery is over, the server refuses sessions
// ("the database system is starting up").
func (s *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var last error
	for {
		conn, err := pgx.Connect(ctx, s.DSN+"&connect_timeout=5")
		if err == nil {
			err = conn.Ping(ctx)
			conn.Close(context.Background())
			if err == nil {
				return nil
			}
		}
		last = err
		select {
		case <-s.done:
			return fmt.Errorf("postgres exited before it was ready: %v", s.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("postgres not ready (%v): %w", context.Cause(ctx), last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
