package hub_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub"
	"github.com/misaki-io/misaki/internal/hub/catalog/catalogtest"
	"github.com/misaki-io/misaki/internal/hub/hubtest"
	"github.com/misaki-io/misaki/internal/hubclient"
	"github.com/misaki-io/misaki/internal/pgtest"
)

// Two replicas on one PostgreSQL: a deployment change made on one wakes a
// long-poll held by the other within a second.
func TestReplicasWakeEachOther(t *testing.T) {
	dsn := pgtest.Start(t)
	shared := t.TempDir() // the keys and the fleet CA the replicas share
	a := hubtest.Start(t, hub.Config{Database: dsn, KeysDir: filepath.Join(shared, "keys"), Replica: "a"})
	caCert, caKey := filepath.Join(a.DataDir, "pki", "ca.crt"), filepath.Join(a.DataDir, "pki", "ca.key")
	b := hubtest.Start(t, hub.Config{Database: dsn, KeysDir: filepath.Join(shared, "keys"), Replica: "b", CACertFile: caCert, CAKeyFile: caKey})
	if _, err := os.Stat(filepath.Join(b.DataDir, "admin.token")); err == nil {
		t.Fatal("replica b made a second admin token")
	}
	b.Token = a.Token

	repo := catalogtest.ServeRepo(t, catalogtest.ShuttleChart(t))
	a.Admin(t, http.StatusCreated, "POST", "/v1/sources", hubv1.ChartSource{Name: "apps", Type: hubv1.SourceHTTP, URL: repo}, nil)
	car := a.Enrol(t, "car-1", map[string]string{"fleet": "eu"}, hubv1.ResourceList{"cpu": "8", "memory": "32Gi"})
	var dep hubv1.Deployment
	a.Admin(t, http.StatusCreated, "POST", "/v1/deployments", hubv1.Deployment{
		Name: "shuttle", Chart: hubv1.ChartRef{Source: "apps", Name: "shuttle", Version: "1.0.0"}, Selector: "fleet=eu",
	}, &dep)
	// The vehicle polls replica b (its certificate is from the shared CA).
	code, d := b.Desired(t, car, hubv1.HalfVehicle, 0, 30*time.Second)
	if code != http.StatusOK || d.Revision != 1 {
		t.Fatalf("first revision through b: %d %+v", code, d)
	}
	for i := range 3 {
		got := make(chan time.Time, 1)
		go func() {
			b.Desired(t, car, hubv1.HalfVehicle, d.Revision, 30*time.Second)
			got <- time.Now()
		}()
		waitForWaiter(t, b) // a poll that started after the write would answer at once and measure nothing
		dep.Values = map[string]any{"replicas": 2 + i}
		a.Admin(t, http.StatusOK, "PUT", "/v1/deployments/shuttle", dep, &dep)
		changed := time.Now()
		select {
		case at := <-got:
			// The change is queued on a, issued by the lease holder, and
			// NOTIFY wakes b; all of it within a second.
			if lat := at.Sub(changed); lat > time.Second {
				t.Errorf("change %d: b's long-poll woke %v after the write on a", i, lat)
			} else {
				t.Logf("change %d: woke after %v", i, lat)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("change %d: b's long-poll did not wake", i)
		}
		d.Revision++
	}
}

// Two replicas on one PostgreSQL: the cloud agent follows the change feed
// on one, and a deployment change made on the other wakes it within a
// second.
func TestReplicasWakeChangeFeed(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.Start(t)
	shared := t.TempDir()
	a := hubtest.Start(t, hub.Config{Database: dsn, KeysDir: filepath.Join(shared, "keys"), Replica: "a"})
	caCert, caKey := filepath.Join(a.DataDir, "pki", "ca.crt"), filepath.Join(a.DataDir, "pki", "ca.key")
	b := hubtest.Start(t, hub.Config{Database: dsn, KeysDir: filepath.Join(shared, "keys"), Replica: "b", CACertFile: caCert, CAKeyFile: caKey})
	b.Token = a.Token

	repo := catalogtest.ServeRepo(t, catalogtest.ShuttleChart(t))
	a.Admin(t, http.StatusCreated, "POST", "/v1/sources", hubv1.ChartSource{Name: "apps", Type: hubv1.SourceHTTP, URL: repo}, nil)
	a.Admin(t, http.StatusCreated, "POST", "/v1/vehicles", hubv1.Vehicle{ID: "car-1", Labels: map[string]string{"fleet": "eu"}, Allocatable: small}, nil)
	var tok hubv1.OperatorToken
	a.Admin(t, http.StatusCreated, "POST", "/v1/operator-tokens", hubv1.OperatorToken{Name: "cloud", Scope: "cloud-agent"}, &tok)
	var dep hubv1.Deployment
	a.Admin(t, http.StatusCreated, "POST", "/v1/deployments", shuttle("fleet=eu"), &dep)
	// The cloud agent follows replica b.
	c := hubclient.New(b.URL, b.CA, nil)
	c.Token = tok.Token
	var seq, rev int64
	for deadline := time.Now().Add(60 * time.Second); rev == 0; {
		if time.Now().After(deadline) {
			t.Fatal("no cloud revision through b in 60s")
		}
		ch, err := c.Changes(ctx, hubv1.HalfCloud, seq, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range ch.Items {
			rev = it.Revision
		}
		seq = ch.Seq
	}
	for i := range 3 {
		got := make(chan hubv1.Changes, 1)
		go func() {
			ch, err := c.Changes(ctx, hubv1.HalfCloud, seq, 30*time.Second)
			if err != nil {
				t.Error(err)
			}
			got <- ch
		}()
		waitForWaiter(t, b)
		dep.Values = map[string]any{"replicas": 2 + i}
		a.Admin(t, http.StatusOK, "PUT", "/v1/deployments/shuttle", dep, &dep)
		changed := time.Now()
		select {
		case ch := <-got:
			if len(ch.Items) != 1 || ch.Items[0].Vehicle != "car-1" || ch.Items[0].Revision != rev+1 {
				t.Fatalf("change %d: %+v, want car-1 at revision %d", i, ch, rev+1)
			}
			if lat := time.Since(changed); lat > time.Second {
				t.Errorf("change %d: the feed on b woke %v after the write on a", i, lat)
			} else {
				t.Logf("change %d: woke after %v", i, lat)
			}
			seq, rev = ch.Seq, rev+1
		case <-time.After(30 * time.Second):
			t.Fatalf("change %d: the feed on b did not wake", i)
		}
	}
}

// A source that changes a pinned version's bytes is refused, naming both
// digests, and the deployment keeps its chart.
func TestPinnedChartRefusesChangedBytes(t *testing.T) {
	h := hubtest.Start(t, hub.Config{})
	repo := catalogtest.NewRepo(t)
	repo.Add(t, catalogtest.ShuttleChart(t))
	h.Admin(t, http.StatusCreated, "POST", "/v1/sources", hubv1.ChartSource{Name: "apps", Type: hubv1.SourceHTTP, URL: repo.URL}, nil)
	var dep hubv1.Deployment
	h.Admin(t, http.StatusCreated, "POST", "/v1/deployments", hubv1.Deployment{
		Name: "shuttle", Chart: hubv1.ChartRef{Source: "apps", Name: "shuttle", Version: "1.0.0"}, Selector: "fleet=eu",
	}, &dep)
	pinned := dep.Chart.Digest

	// Republish 1.0.0 with other bytes.
	changed := t.TempDir()
	if err := os.CopyFS(changed, os.DirFS(catalogtest.ShuttleChart(t))); err != nil {
		t.Fatal(err)
	}
	notes := filepath.Join(changed, "templates", "NOTES.txt")
	if err := os.WriteFile(notes, []byte("changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	repo.Add(t, changed)

	two := hubv1.Deployment{Name: "shuttle-2", Chart: hubv1.ChartRef{Source: "apps", Name: "shuttle", Version: "1.0.0"}, Selector: "fleet=us"}
	code, b := h.Do(t, h.Client(), h.Token, "POST", "/v1/deployments", two, nil)
	if code != http.StatusConflict || !strings.Contains(string(b), pinned) {
		t.Fatalf("a deployment of the changed version: %d %s (want 409 naming %s)", code, b, pinned)
	}
	var cv hubv1.ChartVersion
	code, b = h.Do(t, h.Client(), h.Token, "GET", "/v1/sources/apps/charts/shuttle/versions/1.0.0", nil, &cv)
	if code != http.StatusConflict || !strings.Contains(string(b), pinned) {
		t.Fatalf("reading the changed version: %d %s", code, b)
	}
	var got hubv1.Deployment
	h.Admin(t, http.StatusOK, "GET", "/v1/deployments/shuttle", nil, &got)
	if got.Chart.Digest != pinned {
		t.Fatalf("the deployment's digest moved: %s, pinned %s", got.Chart.Digest, pinned)
	}
}

// After a key rotation every vehicle gets a revision signed by the new
// key, which an agent holding root 1 verifies by walking the chain.
func TestKeyRotationReissues(t *testing.T) {
	h := hubtest.Start(t, hub.Config{})
	repo := catalogtest.ServeRepo(t, catalogtest.ShuttleChart(t))
	h.Admin(t, http.StatusCreated, "POST", "/v1/sources", hubv1.ChartSource{Name: "apps", Type: hubv1.SourceHTTP, URL: repo}, nil)
	car := h.Enrol(t, "car-1", map[string]string{"fleet": "eu"}, hubv1.ResourceList{"cpu": "8", "memory": "32Gi"})
	h.Admin(t, http.StatusCreated, "POST", "/v1/deployments", hubv1.Deployment{
		Name: "shuttle", Chart: hubv1.ChartRef{Source: "apps", Name: "shuttle", Version: "1.0.0"}, Selector: "fleet=eu",
	}, nil)
	_, d1 := h.Desired(t, car, hubv1.HalfVehicle, 0, 20*time.Second)
	verify(t, h, car.ID, d1, 0)
	var rot struct {
		RootVersion int64 `json:"rootVersion"`
	}
	h.Admin(t, http.StatusOK, "POST", "/v1/keys/rotate", map[string]string{"role": "targets"}, &rot)
	if rot.RootVersion != 2 {
		t.Fatalf("rotation: root version %d", rot.RootVersion)
	}
	code, d2 := h.Desired(t, car, hubv1.HalfVehicle, d1.Revision, 20*time.Second)
	if code != http.StatusOK || d2.RootVersion != 2 || d2.Envelope.Signatures[0].KeyID == d1.Envelope.Signatures[0].KeyID {
		t.Fatalf("after rotation: %d %+v", code, d2)
	}
	verify(t, h, car.ID, d2, d1.Revision)
	var audit hubv1.List[hubv1.AuditEntry]
	h.Admin(t, http.StatusOK, "GET", "/v1/audit", nil, &audit)
	if audit.Items[0].Action != "rotate" || audit.Items[0].Actor != "operator/admin" {
		t.Fatalf("audit: %+v", audit.Items[0])
	}
}

// Lists page and filter; reads carry ETags; certificates renew.
func TestListsETagsAndRenewal(t *testing.T) {
	h := hubtest.Start(t, hub.Config{})
	for i := range 7 {
		fleet := "eu"
		if i%2 == 1 {
			fleet = "us"
		}
		h.Admin(t, http.StatusCreated, "POST", "/v1/vehicles", hubv1.Vehicle{ID: "car-" + string(rune('a'+i)), Labels: map[string]string{"fleet": fleet}}, nil)
	}
	var ids []string
	next := ""
	for pages := 0; ; pages++ {
		var l hubv1.List[hubv1.Vehicle]
		h.Admin(t, http.StatusOK, "GET", "/v1/vehicles?selector=fleet%3Deu&limit=2&after="+next, nil, &l)
		for _, v := range l.Items {
			ids = append(ids, v.ID)
		}
		if next = l.Next; next == "" {
			break
		}
		if pages > 5 {
			t.Fatal("paging does not end")
		}
	}
	if strings.Join(ids, ",") != "car-a,car-c,car-e,car-g" {
		t.Fatalf("fleet=eu, two a page: %v", ids)
	}
	var off hubv1.List[hubv1.Vehicle]
	h.Admin(t, http.StatusOK, "GET", "/v1/vehicles?state=online", nil, &off)
	if len(off.Items) != 0 {
		t.Fatalf("online before any vehicle was seen: %+v", off.Items)
	}

	req, _ := http.NewRequest("GET", h.URL+"/v1/vehicles/car-a", nil)
	req.Header.Set("Authorization", "Bearer "+h.Token)
	resp, err := h.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	etag := resp.Header.Get("ETag")
	req.Header.Set("If-None-Match", etag)
	resp, err = h.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if etag == "" || resp.StatusCode != http.StatusNotModified {
		t.Fatalf("ETag %q, then %d", etag, resp.StatusCode)
	}

	car := h.Enrol(t, "car-z", nil, nil)
	_, csr := hubtest.NewCSR(t)
	var cert hubv1.Certificate
	code, b := h.Do(t, car.Client, "", "POST", "/v1/vehicles/car-z/certificate", map[string]string{"csr": string(csr)}, &cert)
	if code != http.StatusOK || cert.Vehicle != "car-z" || !strings.Contains(cert.Certificate, "BEGIN CERTIFICATE") {
		t.Fatalf("renewal: %d %s", code, b)
	}
	// Another vehicle cannot renew car-z's certificate.
	other := h.Enrol(t, "car-y", nil, nil)
	if code, b := h.Do(t, other.Client, "", "POST", "/v1/vehicles/car-z/certificate", map[string]string{"csr": string(csr)}, nil); code != http.StatusForbidden {
		t.Fatalf("car-y renewing car-z: %d %s", code, b)
	}
	// A bootstrap token works once.
	var tok hubv1.BootstrapToken
	h.Admin(t, http.StatusCreated, "POST", "/v1/vehicles/car-a/tokens", nil, &tok)
	for i, want := range []int{http.StatusOK, http.StatusUnauthorized} {
		if code, b := h.Do(t, h.Client(), "", "POST", "/v1/enrol", hubv1.EnrolRequest{Token: tok.Token, CSR: string(csr)}, nil); code != want {
			t.Fatalf("enrolment %d: %d %s, want %d", i+1, code, b, want)
		}
	}
}

// waitForWaiter waits until h holds a long-poll (its /metrics says so).
func waitForWaiter(t *testing.T, h *hubtest.Hub) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		_, b := h.Do(t, h.Client(), "", "GET", "/metrics", nil, nil)
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "misaki_hub_longpoll_waiters "); ok && v != "0" {
				return
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("no long-poll waiting on the hub")
}
