package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/misaki-io/misaki/internal/pgtest"
)

// pgServer is a PostgreSQL server started for one configuration, the way
// internal/pgtest starts one for a test (initdb into a temp dir, postgres
// on a free loopback port, run as the postgres user when this runs as
// root), without a *testing.T.
type pgServer struct {
	DSN    string
	root   string
	cmd    *exec.Cmd
	exited chan error
}

// startPostgres starts a server in a new temp dir (Stop removes it).
// syncCommit is the server's synchronous_commit; fsync and
// full_page_writes keep their defaults.
func startPostgres(ctx context.Context, syncCommit string) (*pgServer, error) {
	bin := pgtest.BinDir()
	if bin == "" {
		return nil, errors.New("postgres: no server under /usr/lib/postgresql (apt-get install postgresql)")
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("postgres: running as root, and PostgreSQL will not: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	root, err := os.MkdirTemp("", "hubbench-pg-")
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	started := false
	defer func() {
		if !started {
			os.RemoveAll(root)
		}
	}()
	if err := os.Chmod(root, 0o755); err != nil { // the server's user must reach its directories
		return nil, fmt.Errorf("postgres: %w", err)
	}
	data, sock := filepath.Join(root, "data"), filepath.Join(root, "run")
	for _, d := range []string{data, sock} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return nil, fmt.Errorf("postgres: %w", err)
		}
		if cred != nil {
			if err := os.Chown(d, int(cred.Uid), int(cred.Gid)); err != nil {
				return nil, fmt.Errorf("postgres: %w", err)
			}
		}
	}
	if err := os.Chmod(data, 0o700); err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	run := func(name string, args ...string) *exec.Cmd {
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true}
		cmd.Dir = root
		return cmd
	}
	if out, err := run("initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("postgres: initdb: %v\n%s", err, out)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(root, "postgres.log"))
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child has its own descriptor
	cmd := run("postgres", "-D", data, "-p", strconv.Itoa(port), "-k", sock,
		"-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200",
		"-c", "synchronous_commit="+syncCommit)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	started = true // Stop cleans up from here
	p := &pgServer{root: root, cmd: cmd, exited: make(chan error, 1)}
	go func() { p.exited <- cmd.Wait() }()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	p.DSN = fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", addr)
	if err := p.waitReady(ctx); err != nil {
		p.Stop()
		log, _ := os.ReadFile(logFile.Name())
		return nil, fmt.Errorf("postgres: %v\n%s", err, log)
	}
	return p, nil
}

// waitReady waits until the server answers a query: until recovery is
// over it refuses sessions even with its port open.
func (p *pgServer) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var last error
	for {
		conn, err := pgx.Connect(ctx, p.DSN+"&connect_timeout=5")
		if err == nil {
			err = conn.Ping(ctx)
			conn.Close(context.Background())
			if err == nil {
				return nil
			}
		}
		last = err
		select {
		case err := <-p.exited:
			p.exited <- err
			return fmt.Errorf("exited before it was ready: %v", err)
		case <-ctx.Done():
			return fmt.Errorf("not ready after 60s: %w", last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// CPU is the CPU time of the server and every process it has now
// (backends, checkpointer, WAL writer, ...). A backend that exited during
// a measurement takes its time with it; the hubs keep theirs open.
func (p *pgServer) CPU() float64 {
	pid := p.cmd.Process.Pid
	total, _ := cpuSeconds(pid)
	for _, c := range children(pid) {
		s, _ := cpuSeconds(c)
		total += s
	}
	return total
}

// Stop stops the server (fast shutdown), waits for it and removes its
// directory.
func (p *pgServer) Stop() {
	p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-p.exited:
		p.exited <- err
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
	}
	os.RemoveAll(p.root)
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
