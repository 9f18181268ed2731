package pgtest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// A real server: a table written and read back, and a notification
// delivered to a listener (the hub's replicas wake each other with
// LISTEN/NOTIFY).
func TestStart(t *testing.T) {
	dsn := Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE TABLE t (k text PRIMARY KEY, v int)"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO t VALUES ($1, $2)", "a", 42); err != nil {
		t.Fatal(err)
	}
	var v int
	if err := conn.QueryRow(ctx, "SELECT v FROM t WHERE k = $1", "a").Scan(&v); err != nil || v != 42 {
		t.Fatalf("read back %d, %v", v, err)
	}

	listener, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close(context.Background())
	if _, err := listener.Exec(ctx, "LISTEN changes"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_notify('changes', 'vehicle-1')"); err != nil {
		t.Fatal(err)
	}
	n, err := listener.WaitForNotification(ctx)
	if err != nil || n.Channel != "changes" || n.Payload != "vehicle-1" {
		t.Fatalf("notification %+v, %v", n, err)
	}
}

// A server for a program: its settings replace the defaults, and Stop
// ends the server and removes its directory (twice is harmless).
func TestStartServer(t *testing.T) {
	if BinDir() == "" {
		t.Skip("pgtest: PostgreSQL not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := StartServer(ctx, Options{Settings: map[string]string{"fsync": "on", "synchronous_commit": "local"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	conn, err := pgx.Connect(ctx, s.DSN)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"fsync": "on", "synchronous_commit": "local", "full_page_writes": "off", "max_connections": "200"} {
		var got string
		if err := conn.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&got); err != nil || got != want {
			t.Errorf("%s = %q (%v), want %q", name, got, err, want)
		}
	}
	var pid int
	if err := conn.QueryRow(ctx, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if ppid := parent(t, pid); ppid != s.PID {
		t.Errorf("the checkpointer's parent is %d, want the server's PID %d", ppid, s.PID)
	}
	s.Stop()
	s.Stop()
	if _, err := os.Stat(s.Dir); !os.IsNotExist(err) {
		t.Errorf("%s after Stop: %v", s.Dir, err)
	}
	if err := syscall.Kill(s.PID, 0); err == nil {
		t.Errorf("process %d still there after Stop", s.PID)
	}
}

func parent(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

func TestOptionsValidate(t *testing.T) {
	for _, k := range []string{"port", "listen_addresses", "unix_socket_directories"} {
		if err := (Options{Settings: map[string]string{k: "x"}}).Validate(); err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("Settings[%s]: %v", k, err)
		}
	}
	if err := (Options{Settings: map[string]string{"work_mem": "64MB"}}).Validate(); err != nil {
		t.Errorf("work_mem: %v", err)
	}
}
