// Command simvehicle is a simulated vehicle for trying the hub without a
// cluster (misaki-agent is the real one): it enrols with a bootstrap
// token, long-polls its desired state, verifies it as the agent does (the
// signature chain from a pinned root, its vehicle ID, the expiry, a rising
// revision, the digest), prints it, and reports every object healthy
// without applying anything.
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
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hubclient"
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
	dir      string
	c        *hubclient.Client
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
	a := &agent{dir: *dir}
	plain := hubclient.New(*hub, pool, nil)
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
	a.c = hubclient.New(*hub, pool, &cert)
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

func (a *agent) enrol(ctx context.Context, c *hubclient.Client, token string) (tls.Certificate, error) {
	tc, cert, keyPEM, err := c.EnrolNew(ctx, token)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("enrol: %w", err)
	}
	if err := os.WriteFile(a.path("vehicle.key"), keyPEM, 0o600); err != nil {
		return tls.Certificate{}, err
	}
	if err := os.WriteFile(a.path("vehicle.crt"), []byte(cert.Certificate), 0o644); err != nil {
		return tls.Certificate{}, err
	}
	fmt.Printf("enrolled as vehicle %s (certificate until %s)\n", cert.Vehicle, cert.Expires.Format(time.RFC3339))
	return tc, nil
}

// loadTrust restores the pinned root, or pins root 1 from the hub.
func (a *agent) loadTrust(ctx context.Context, c *hubclient.Client) error {
	root, err := os.ReadFile(a.path("root.json"))
	if errors.Is(err, os.ErrNotExist) {
		if root, err = c.Root(ctx, 1); err != nil {
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
	d, err := a.c.Desired(ctx, a.id, hubv1.HalfVehicle, a.applied, wait)
	if err != nil || d == nil {
		return false, err
	}
	// Walk the root chain to the hub's newest, one version at a time.
	for v, _ := a.verifier.Root(); v < d.RootVersion; v, _ = a.verifier.Root() {
		next, err := a.c.Root(ctx, v+1)
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
	state, err := a.verifier.Verify(*d, trust.Expect{Vehicle: a.id, Half: hubv1.HalfVehicle, After: a.applied}, time.Now())
	if err != nil {
		return false, a.refuse(ctx, d.Revision, err)
	}
	fmt.Printf("revision %d verified (digest %s, expires %s): %d objects\n", state.Revision, d.Digest, state.Expires.Format(time.RFC3339), len(state.Objects))
	for _, p := range state.Placement {
		fmt.Printf("  %-12s %-12s %-8s %s\n", p.Deployment, p.Component, p.Place, p.Reason)
	}
	objs, err := hubclient.Statuses(state.Objects, hubv1.StateHealthy)
	if err != nil {
		return false, err
	}
	a.applied = state.Revision
	if err := os.WriteFile(a.path("applied"), []byte(strconv.FormatInt(a.applied, 10)), 0o644); err != nil {
		return false, err
	}
	// A simulated vehicle's objects are ready at once: Healthy, with the
	// deployment generations rollouts count.
	rep := hubv1.Reported{Half: hubv1.HalfVehicle, AppliedRevision: a.applied, Phase: hubv1.PhaseHealthy, Objects: objs,
		Deployments: state.Deployments, AgentVersion: "simvehicle"}
	return true, a.c.Report(ctx, a.id, rep)
}

// refuse reports a refused revision to the hub, as the agent does.
func (a *agent) refuse(ctx context.Context, rev int64, why error) error {
	rep := hubv1.Reported{Half: hubv1.HalfVehicle, AppliedRevision: a.applied, AgentVersion: "simvehicle", Refused: &hubv1.Refusal{Revision: rev, Reason: why.Error()}}
	if err := a.c.Report(ctx, a.id, rep); err != nil {
		return fmt.Errorf("refused revision %d (%v), and the report failed: %w", rev, why, err)
	}
	return fmt.Errorf("refused revision %d: %w", rev, why)
}
