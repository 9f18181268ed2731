package test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/misaki-io/misaki/internal/devpki"
	"github.com/misaki-io/misaki/internal/gateway/idem/postgres"
	"github.com/misaki-io/misaki/internal/pgtest"
	"github.com/misaki-io/misaki/internal/testbin"
)

// TestGatewayReplicasOnPostgres runs three gateway replicas (the real
// misaki-gateway binary: misaki-proxy's gateway role with the shared
// store linked in) on one real PostgreSQL, in front of a service that
// counts its deliveries per key, and sends every key several times, to
// different replicas at once, as edges behind a load balancer would.
//
// Three replicas, all alive: each key reaches the service exactly once,
// and every other send gets the stored answer (Misaki-Replayed).
//
// Then one replica, the victim, is killed with SIGKILL mid-load, while the
// service holds the first delivery of some keys (held) that the victim
// sent it, and while other keys go to all three. The client retries on the
// live replicas, as an edge would (connection errors, 409 and 5xx). What
// the claim semantics promise, for every key:
//   - the victim's claims that the kill left (read from the database once
//     its connections are gone: orphaned) stay until their leases end:
//     until then every retry on a live replica gets 409 and the service
//     sees nothing; after that the retry claims the key and reaches the
//     service again, and every later repeat gets that answer;
//   - a held key is such a claim, whose first delivery the service saw: it
//     is delivered exactly twice, the second time at or after its lease's
//     end;
//   - a key the victim did not leave claimed is delivered exactly once,
//     and every answer is that delivery's.
func TestGatewayReplicasOnPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("builds misaki-gateway and runs three replicas on a real PostgreSQL server")
	}
	const claimTTL = 6 * time.Second
	dsn := pgtest.Start(t)
	bin := buildGatewayWithPostgres(t)
	// The clock starts after the build, which can take minutes on a fresh
	// machine under the race detector.
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	pki, err := devpki.Write(t.TempDir(), "VIN-scale")
	if err != nil {
		t.Fatal(err)
	}
	svc := newCountingService(t)

	cfg := fmt.Sprintf(`
role: gateway
listen: 127.0.0.1:0
admin: 127.0.0.1:0
gateway:
  tls: {certFile: %s, keyFile: %s, clientCAFile: %s}
  idempotency: {postgres: {dsnEnv: MISAKI_GATEWAY_DSN}, claimTTL: %s}
routes:
  - {name: svc, hosts: [svc.cloud.misaki], upstream: %s}
`, pki.ServerCert, pki.ServerKey, pki.CA, claimTTL, svc.URL)
	var replicas []*gatewayProc
	for range 3 {
		replicas = append(replicas, startGatewayProc(t, bin, cfg, "MISAKI_GATEWAY_DSN="+dsn))
	}
	cl := newScaleClient(t, pki, replicas)

	t.Run("AllAlive", func(t *testing.T) {
		const keys, sends = 120, 4
		var wg sync.WaitGroup
		for i := range keys {
			for j := range sends {
				wg.Go(func() { cl.deliver(ctx, fmt.Sprint("alive-", i), (i+j)%3) })
			}
		}
		wg.Wait()
		for i := range keys {
			key := fmt.Sprint("alive-", i)
			if n := len(svc.deliveries(key)); n != 1 {
				t.Errorf("%s reached the service %d times, want 1", key, n)
				continue
			}
			atts := cl.finals(key)
			if len(atts) != sends {
				t.Errorf("%s: %d answers, want %d", key, len(atts), sends)
				continue
			}
			fresh := 0
			for _, a := range atts {
				if a.body != answerBody(key, 1) {
					t.Errorf("%s answered %d %q, want the stored answer %q", key, a.status, a.body, answerBody(key, 1))
				}
				if !a.replayed {
					fresh++
				}
			}
			if fresh != 1 {
				t.Errorf("%s: %d answers not marked Misaki-Replayed, want 1 (every repeat gets the stored answer)", key, fresh)
			}
		}
	})
	if t.Failed() {
		return
	}

	t.Run("KillOneMidLoad", func(t *testing.T) {
		victim := replicas[2]
		const held, keys, sends = 8, 150, 3
		heldKey := func(i int) string { return fmt.Sprint("held-", i) }
		for i := range held {
			svc.hold(heldKey(i))
		}
		var wg sync.WaitGroup
		// The held keys go first to the victim, which claims them and sends
		// them to the service, which holds them.
		for i := range held {
			wg.Go(func() { cl.deliver(ctx, heldKey(i), 2) })
		}
		for range held {
			select {
			case <-svc.holding:
			case <-ctx.Done():
				t.Fatal("the service did not get the held keys")
			}
		}
		// Load over all three replicas; the kill comes once a third of it is
		// answered, so that the victim is busy.
		progress := make(chan struct{}, keys*sends)
		for i := range keys {
			for j := range sends {
				wg.Go(func() {
					cl.deliver(ctx, fmt.Sprint("load-", i), (i+j)%3)
					progress <- struct{}{}
				})
			}
		}
		for range keys * sends / 3 {
			select {
			case <-progress:
			case <-ctx.Done():
				t.Fatal("the load made no progress")
			}
		}
		victim.kill(t)
		orphaned := victim.orphanedClaims(ctx, t, dsn)
		t.Logf("the victim left %d claims", len(orphaned))
		for i := range held {
			if _, ok := orphaned[heldKey(i)]; !ok {
				t.Fatalf("%s, held by the service for the victim, is not among its claims: %v", heldKey(i), orphaned)
			}
		}
		wg.Wait()

		check := func(key string, mustRedeliver bool) {
			ds := svc.deliveries(key)
			until, orphan := orphaned[key]
			switch {
			case !orphan && len(ds) != 1:
				t.Errorf("%s (not left claimed) reached the service %d times, want 1", key, len(ds))
				return
			case orphan && mustRedeliver && len(ds) != 2:
				t.Errorf("%s (held when the victim died) reached the service %d times, want 2", key, len(ds))
				return
			case orphan && (len(ds) < 1 || len(ds) > 2):
				t.Errorf("%s (left claimed) reached the service %d times, want 1 or 2", key, len(ds))
				return
			}
			if orphan && len(ds) == 2 && ds[1].Before(until) {
				t.Errorf("%s reached the service again at %s, before the dead claim's lease ended at %s", key, ds[1].Format(time.StampMicro), until.Format(time.StampMicro))
			}
			want := answerBody(key, len(ds))
			for _, a := range cl.attempts(key) {
				switch {
				case a.err != nil:
				case orphan && a.replica == 2:
					// An answer the victim relayed and never stored.
				case orphan && a.at.Before(until) && a.status != http.StatusConflict:
					t.Errorf("%s: replica %d answered %d %q at %s, while the dead claim lived (until %s); want 409", key, a.replica, a.status, a.body, a.at.Format(time.StampMicro), until.Format(time.StampMicro))
				case a.status == http.StatusConflict:
				case a.status != http.StatusCreated || a.body != want:
					t.Errorf("%s: replica %d answered %d %q, want the stored answer %q", key, a.replica, a.status, a.body, want)
				}
			}
			if len(cl.finals(key)) == 0 {
				t.Errorf("%s got no final answer", key)
			}
		}
		conflicts := 0
		for i := range held {
			check(heldKey(i), true)
			for _, a := range cl.attempts(heldKey(i)) {
				if a.status == http.StatusConflict {
					conflicts++
				}
			}
		}
		if conflicts == 0 {
			t.Error("no retry of a held key got 409 while the dead claims lived")
		}
		twice := 0
		for i := range keys {
			key := fmt.Sprint("load-", i)
			check(key, false)
			if len(svc.deliveries(key)) == 2 {
				twice++
			}
		}
		t.Logf("%d keys of the load were left claimed by the victim; %d of them reached the service twice (the victim had sent them before it died)", len(orphaned)-held, twice)
		// Every claim was answered in the end; none is left.
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		var claims int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM gateway_idempotency_keys WHERE status IS NULL`).Scan(&claims); err != nil || claims != 0 {
			t.Errorf("%d claims left, %v", claims, err)
		}
	})
}

// buildGatewayWithPostgres builds misaki-gateway, misaki-proxy with the
// shared store.
func buildGatewayWithPostgres(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := testbin.Build(dir, nil, "github.com/misaki-io/misaki/cmd/misaki-gateway"); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "misaki-gateway")
}

// countingService records when each Idempotency-Key reached it, answers
// "<key> #<n>" for the nth delivery, and holds the first delivery of the
// keys it is told to hold until the gateway's connection goes away.
type countingService struct {
	*httptest.Server
	holding chan string // a held key arrived

	mu    sync.Mutex // guards the fields below
	at    map[string][]time.Time
	holds map[string]bool
}

func newCountingService(t *testing.T) *countingService {
	s := &countingService{holding: make(chan string, 64), at: map[string][]time.Time{}, holds: map[string]bool{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		key := r.Header.Get("Idempotency-Key")
		io.Copy(io.Discard, r.Body)
		s.mu.Lock()
		s.at[key] = append(s.at[key], now)
		n, hold := len(s.at[key]), s.holds[key]
		s.mu.Unlock()
		if hold && n == 1 {
			s.holding <- key
			<-r.Context().Done() // the replica that sent it died
			return
		}
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, answerBody(key, n))
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *countingService) hold(key string) {
	s.mu.Lock()
	s.holds[key] = true
	s.mu.Unlock()
}

func (s *countingService) deliveries(key string) []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.at[key])
}

func answerBody(key string, n int) string { return fmt.Sprintf("%s #%d", key, n) }

// gatewayProc is one replica: a misaki-proxy --role gateway process.
type gatewayProc struct {
	cmd                  *exec.Cmd
	addr, admin, replica string
	logs                 *logBuffer
	exited               chan struct{}
}

func startGatewayProc(t *testing.T, bin, cfg string, env ...string) *gatewayProc {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", path)
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	g := &gatewayProc{cmd: cmd, logs: &logBuffer{}, exited: make(chan struct{})}
	found := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			g.logs.WriteString(line + "\n")
			var rec struct{ Msg, Addr, Admin, Replica string }
			if g.addr == "" && json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "listening" {
				g.addr, g.admin, g.replica = rec.Addr, rec.Admin, rec.Replica
				close(found)
			}
		}
		io.Copy(io.Discard, stderr)
		cmd.Wait()
		close(g.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-g.exited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-g.exited
		}
		if t.Failed() {
			t.Logf("gateway %s logs:\n%s", g.replica, g.logs.String())
		}
	})
	select {
	case <-found:
	case <-g.exited:
		t.Fatalf("gateway exited; logs:\n%s", g.logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("gateway did not start; logs:\n%s", g.logs.String())
	}
	if g.replica == "" {
		t.Fatalf("the gateway's listening line names no replica; logs:\n%s", g.logs.String())
	}
	return g
}

// kill sends SIGKILL and waits for the process to be gone.
func (g *gatewayProc) kill(t *testing.T) {
	t.Helper()
	if err := g.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-g.exited
}

// orphanedClaims waits until the dead replica's database connections are
// gone (each backend has finished the statement it was running, so that
// nothing of the replica commits later), then returns its claims left,
// by key, with the end of each one's lease.
func (g *gatewayProc) orphanedClaims(ctx context.Context, t *testing.T, dsn string) map[string]time.Time {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, postgres.ApplicationName(g.replica)).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the dead replica's %d connections stay", n)
		case <-time.After(5 * time.Millisecond):
		}
	}
	rows, err := conn.Query(ctx, `SELECT key, claimed_until FROM gateway_idempotency_keys WHERE owner = $1 AND status IS NULL`, g.replica)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]time.Time{}
	var key []byte
	var until int64
	if _, err := pgx.ForEachRow(rows, []any{&key, &until}, func() error {
		_, k, _ := bytes.Cut(key, []byte{0}) // the vehicle identity, NUL, the key
		out[string(k)] = time.Unix(0, until)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// scaleClient sends each key until it gets a final answer, as an edge
// does: a connection error, a 5xx or a 409 is retried on the next replica.
type scaleClient struct {
	http     *http.Client
	replicas []*gatewayProc

	mu   sync.Mutex // guards sent
	sent map[string][]attempt
}

type attempt struct {
	replica  int
	status   int
	body     string
	replayed bool
	err      error
	at       time.Time // when the answer (or the error) came
}

func newScaleClient(t *testing.T, pki devpki.Files, replicas []*gatewayProc) *scaleClient {
	t.Helper()
	caPEM, err := os.ReadFile(pki.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(pki.ClientCert, pki.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}},
		MaxConnsPerHost:     32,
		MaxIdleConnsPerHost: 32,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &scaleClient{http: &http.Client{Transport: tr, Timeout: 30 * time.Second}, replicas: replicas, sent: map[string][]attempt{}}
}

// deliver sends key, first to replica first, until a final answer.
func (c *scaleClient) deliver(ctx context.Context, key string, first int) {
	backoff := 10 * time.Millisecond
	for i := first; ctx.Err() == nil; i = (i + 1) % len(c.replicas) {
		a := c.send(ctx, key, i)
		c.mu.Lock()
		c.sent[key] = append(c.sent[key], a)
		c.mu.Unlock()
		if a.err == nil && a.status < 500 && a.status != http.StatusConflict {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff): // an edge's retry backoff
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

func (c *scaleClient) send(ctx context.Context, key string, replica int) attempt {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+c.replicas[replica].addr+"/v1/orders", strings.NewReader(`{"order":"`+key+`"}`))
	req.Host = "svc.cloud.misaki"
	req.Header.Set("Idempotency-Key", key)
	resp, err := c.http.Do(req)
	if err != nil {
		return attempt{replica: replica, err: err, at: time.Now()}
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return attempt{replica: replica, status: resp.StatusCode, body: string(b), replayed: resp.Header.Get("Misaki-Replayed") == "true", err: err, at: time.Now()}
}

func (c *scaleClient) attempts(key string) []attempt {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.sent[key])
}

// finals are key's final answers (neither an error, nor a 5xx, nor 409).
func (c *scaleClient) finals(key string) []attempt {
	var out []attempt
	for _, a := range c.attempts(key) {
		if a.err == nil && a.status < 500 && a.status != http.StatusConflict {
			out = append(out, a)
		}
	}
	return out
}
