// Command simvehicle is a simulated vehicle agent for trying the hub
// before the real agent (issue 18) runs on a cluster: it enrols with a
// bootstrap token, long-polls its desired state, verifies it the way the
// agent will (the signature chain from a pinned root, its vehicle ID, the
// expiry, a rising revision, the digest), prints it, and reports every
// object healthy without applying anything.
//
//	go run ./hack/simvehicle --hub https://localhost:8443 --ca-file misaki-hub-data/ca.crt \
//	    --token "$TOKEN" --dir /tmp/car-1 --once
//
// The first run pins root version 1 as fetched from the hub (trust on
// first use); the real agent is given its root at install time.
package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/trust"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "simvehicle:", err)
		os.Exit(1)
	}
}

type agent struct {
	hub, dir string
	c        *http.Client
	id       string
	verifier *trust.Verifier
	applied  int64
}

func run(ctx context.Context) error {
	hub := flag.String("hub", "https://localhost:8443", "the hub's URL")
	caFile := flag.String("ca-file", "misaki-hub-data/ca.crt", "the CA of the hub's certificate")
	token := flag.String("token", "", "bootstrap token (first run only)")
	dir := flag.String("dir", "simvehicle-state", "state: key, certificate, pinned root, applied revision")
	once := flag.Bool("once", false, "exit after the first revision")
	wait := flag.Duration("wait", 30*time.Second, "long-poll wait")
	flag.Parse()
	caPEM, err := os.ReadFile(*caFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return err
	}
	a := &agent{hub: *hub, dir: *dir}
	plain := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: time.Minute}
	cert, err := tls.LoadX509KeyPair(a.path("vehicle.crt"), a.path("vehicle.key"))
	if errors.Is(err, os.ErrNotExist) {
		if *token == "" {
			return errors.New("not enrolled yet: give --token (misaki vehicle token <id>)")
		}
		if cert, err = a.enrol(ctx, plain, *token); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return err
	}
	a.id = leaf.Subject.CommonName
	a.c = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}, Timeout: *wait + time.Minute}
	if err := a.loadTrust(ctx, plain); err != nil {
		return err
	}
	if b, err := os.ReadFile(a.path("applied")); err == nil {
		a.applied, _ = strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64)
	}
	fmt.Printf("vehicle %s: waiting for a revision above %d\n", a.id, a.applied)
	for ctx.Err() == nil {
		got, err := a.poll(ctx, *wait)
		if err != nil {
			fmt.Fprintln(os.Stderr, "simvehicle:", err)
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Second):
			}
			continue
		}
		if got && *once {
			return nil
		}
	}
	return nil
}

func (a *agent) path(name string) string { return filepath.Join(a.dir, name) }

func (a *agent) enrol(ctx context.Context, c *http.Client, token string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "simvehicle"}}, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	var cert hubv1.Certificate
	req := hubv1.EnrolRequest{Token: token, CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))}
	if err := do(ctx, c, "POST", a.hub+"/v1/enrol", req, &cert); err != nil {
		return tls.Certificate{}, fmt.Errorf("enrol: %w", err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb})
	if err := os.WriteFile(a.path("vehicle.key"), keyPEM, 0o600); err != nil {
		return tls.Certificate{}, err
	}
	if err := os.WriteFile(a.path("vehicle.crt"), []byte(cert.Certificate), 0o644); err != nil {
		return tls.Certificate{}, err
	}
	fmt.Printf("enrolled as vehicle %s (certificate until %s)\n", cert.Vehicle, cert.Expires.Format(time.RFC3339))
	return tls.X509KeyPair([]byte(cert.Certificate), keyPEM)
}

// loadTrust restores the pinned root, or pins root 1 from the hub.
func (a *agent) loadTrust(ctx context.Context, c *http.Client) error {
	root, err := os.ReadFile(a.path("root.json"))
	if errors.Is(err, os.ErrNotExist) {
		if root, err = get(ctx, c, a.hub+"/v1/trust/root/1.json"); err != nil {
			return fmt.Errorf("fetch root 1: %w", err)
		}
		if err := os.WriteFile(a.path("root.json"), root, 0o644); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	a.verifier, err = trust.NewVerifier(root, time.Now())
	return err
}

// poll long-polls once; it reports whether a revision was applied.
func (a *agent) poll(ctx context.Context, wait time.Duration) (bool, error) {
	url := fmt.Sprintf("%s/v1/vehicles/%s/desired?after=%d&wait=%s", a.hub, a.id, a.applied, wait)
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return false, err
	}
	resp, err := a.c.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotModified {
		return false, nil
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return false, err
	}
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("desired: %s: %s", resp.Status, body)
	}
	var d hubv1.Desired
	if err := json.Unmarshal(body, &d); err != nil {
		return false, err
	}
	// Walk the root chain to the hub's newest, one version at a time.
	for v, _ := a.verifier.Root(); v < d.RootVersion; v, _ = a.verifier.Root() {
		next, err := get(ctx, a.c, fmt.Sprintf("%s/v1/trust/root/%d.json", a.hub, v+1))
		if err != nil {
			return false, err
		}
		if err := a.verifier.UpdateRoot(next, time.Now()); err != nil {
			return false, a.refuse(ctx, d.Revision, err)
		}
		_, root := a.verifier.Root()
		if err := os.WriteFile(a.path("root.json"), root, 0o644); err != nil {
			return false, err
		}
	}
	state, err := a.verifier.Verify(d, trust.Expect{Vehicle: a.id, Half: hubv1.HalfVehicle, After: a.applied}, time.Now())
	if err != nil {
		return false, a.refuse(ctx, d.Revision, err)
	}
	fmt.Printf("revision %d verified (digest %s, expires %s): %d objects\n", state.Revision, d.Digest, state.Expires.Format(time.RFC3339), len(state.Objects))
	for _, p := range state.Placement {
		fmt.Printf("  %-12s %-12s %-8s %s\n", p.Deployment, p.Component, p.Place, p.Reason)
	}
	var objs []hubv1.ObjectStatus
	for _, raw := range state.Objects {
		var o struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(raw, &o); err != nil {
			return false, err
		}
		objs = append(objs, hubv1.ObjectStatus{APIVersion: o.APIVersion, Kind: o.Kind, Namespace: o.Metadata.Namespace, Name: o.Metadata.Name, State: hubv1.StateHealthy})
	}
	a.applied = state.Revision
	if err := os.WriteFile(a.path("applied"), []byte(strconv.FormatInt(a.applied, 10)), 0o644); err != nil {
		return false, err
	}
	rep := hubv1.Reported{Half: hubv1.HalfVehicle, AppliedRevision: a.applied, Objects: objs, AgentVersion: "simvehicle"}
	return true, do(ctx, a.c, "PUT", fmt.Sprintf("%s/v1/vehicles/%s/reported", a.hub, a.id), rep, nil)
}

// refuse reports a refused revision to the hub, as the agent does.
func (a *agent) refuse(ctx context.Context, rev int64, why error) error {
	rep := hubv1.Reported{Half: hubv1.HalfVehicle, AppliedRevision: a.applied, AgentVersion: "simvehicle", Refused: &hubv1.Refusal{Revision: rev, Reason: why.Error()}}
	if err := do(ctx, a.c, "PUT", fmt.Sprintf("%s/v1/vehicles/%s/reported", a.hub, a.id), rep, nil); err != nil {
		return fmt.Errorf("refused revision %d (%v), and the report failed: %w", rev, why, err)
	}
	return fmt.Errorf("refused revision %d: %w", rev, why)
}

func get(ctx context.Context, c *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return b, nil
}

func do(ctx context.Context, c *http.Client, method, url string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, bytes.TrimSpace(body))
	}
	if out != nil {
		return json.Unmarshal(body, out)
	}
	return nil
}
