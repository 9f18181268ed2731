package identity

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/misaki-io/misaki/internal/backoff"
	"github.com/misaki-io/misaki/internal/clock"
	"github.com/misaki-io/misaki/internal/framelog"
	"github.com/misaki-io/misaki/internal/hubclient"
)

// Enrol spends a bootstrap token: it makes a key, sends the hub a CSR
// with token through c (which needs no client certificate), checks the
// certificate the hub returns (it is for the key, it names a vehicle, it
// is signed by the CA the hub returned) and writes hub-ca.pem and then
// identity.pem in dir, replacing any identity there. A token the hub
// refuses gives an error wrapping ErrTokenRefused and the hub's
// *hubclient.Error, and writes nothing. On any error identity.pem is left
// as it was (hub-ca.pem is replaced first, so a failure writing
// identity.pem may leave the new bundle next to the old identity, which
// loads).
func Enrol(ctx context.Context, dir string, c *hubclient.Client, token string, clk clock.Clock) (*Identity, error) {
	return enrolFP(ctx, dir, c, token, clk, nil)
}

func enrolFP(ctx context.Context, dir string, c *hubclient.Client, token string, clk clock.Clock, fp framelog.Failpoint) (*Identity, error) {
	key, err := hubclient.NewKey()
	if err != nil {
		return nil, fmt.Errorf("identity: enrol: new key: %w", err)
	}
	csr, err := hubclient.NewCSR(key)
	if err != nil {
		return nil, fmt.Errorf("identity: enrol: %w", err)
	}
	hc, err := c.Enrol(ctx, token, csr)
	if err != nil {
		// The enrol endpoint answers 401 for a token that does not parse,
		// is unknown, used or expired (store.ErrTokenInvalid); 403 is
		// taken the same way should a proxy in front answer it.
		if hubclient.IsStatus(err, http.StatusUnauthorized) || hubclient.IsStatus(err, http.StatusForbidden) {
			return nil, fmt.Errorf("%w: %w", ErrTokenRefused, err)
		}
		return nil, fmt.Errorf("identity: enrol at %s: %w", c.URL, err)
	}
	m, file, err := build(key, hc, "")
	if err != nil {
		return nil, fmt.Errorf("identity: enrol: %w", err)
	}
	if err := save(dir, fp, file, m.hubCA, true); err != nil {
		return nil, fmt.Errorf("%w (the token is spent: the vehicle needs a new one)", err)
	}
	id := newIdentity(dir, clk, m)
	id.fp = fp
	return id, nil
}

// Renew gets a new certificate for a new key from the hub through c,
// which must present the current certificate (Client or ClientTLS),
// writes it to the state directory and makes it the current one. On any
// error neither the files nor the current certificate change. After a
// renewal c's idle connections are closed, so its next call presents the
// new certificate.
func (id *Identity) Renew(ctx context.Context, c *hubclient.Client) error {
	id.renewMu.Lock()
	defer id.renewMu.Unlock()
	cur := id.cur.Load()
	key, err := hubclient.NewKey()
	if err != nil {
		return fmt.Errorf("identity: renew: new key: %w", err)
	}
	csr, err := hubclient.NewCSR(key)
	if err != nil {
		return fmt.Errorf("identity: renew: %w", err)
	}
	hc, err := c.Renew(ctx, cur.vehicle, csr)
	if err != nil {
		return fmt.Errorf("identity: renew vehicle %s's certificate at %s: %w", cur.vehicle, c.URL, err)
	}
	m, file, err := build(key, hc, cur.vehicle)
	if err != nil {
		return fmt.Errorf("identity: renew: %w", err)
	}
	if err := save(id.dir, id.fp, file, m.hubCA, !bytes.Equal(m.hubCA, cur.hubCA)); err != nil {
		return fmt.Errorf("identity: renew: %w", err)
	}
	id.cur.Store(m)
	c.HTTP.CloseIdleConnections()
	return nil
}

// RunRenewal renews the certificate through c at RenewAt, by the
// identity's clock, and again at each new certificate's RenewAt, until
// ctx ends. A failed renewal is logged and retried after b's delay (b is
// reset after a success). An expired certificate still gets attempts, as
// the hub may take it; when it does not, the log says the vehicle must be
// enrolled again with a new bootstrap token. A new certificate that is
// already due (the vehicle's clock ahead of the hub's) waits b's delay
// too, rather than renewing in a loop. log nil discards.
func (id *Identity) RunRenewal(ctx context.Context, c *hubclient.Client, b *backoff.Backoff, log *slog.Logger) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "identity", "vehicle", id.Vehicle())
	for {
		at := id.RenewAt()
		if wait := at.Sub(id.clk.Now()); wait > 0 {
			log.Debug("certificate renewal scheduled", "at", at, "notAfter", id.NotAfter())
			if backoff.Sleep(ctx, id.clk, wait) != nil {
				return
			}
		}
		err := id.Renew(ctx, c)
		if ctx.Err() != nil {
			return
		}
		switch {
		case err == nil && id.RenewAt().After(id.clk.Now()):
			b.Reset()
			log.Info("certificate renewed", "notAfter", id.NotAfter(), "renewAt", id.RenewAt())
			continue
		case err == nil:
			log.Warn("certificate renewed, but the new one is already due for renewal: is the vehicle's clock ahead of the hub's?",
				"now", id.clk.Now(), "notBefore", id.NotBefore(), "notAfter", id.NotAfter(), "renewAt", id.RenewAt())
		case id.expired():
			log.Error("certificate renewal failed and the certificate has expired: if the hub keeps refusing it, enrol the vehicle again with a new bootstrap token",
				"err", err, "expired", id.NotAfter(), "attempt", b.Attempts()+1)
		default:
			log.Warn("certificate renewal failed; retrying", "err", err, "notAfter", id.NotAfter(), "attempt", b.Attempts()+1)
		}
		if b.Wait(ctx) != nil {
			return
		}
	}
}
