package pgtest

import (
	"context"
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
