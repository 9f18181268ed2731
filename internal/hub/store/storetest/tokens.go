package storetest

import (
	"errors"
	"sync"
	"testing"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/store"
)

func testBootstrapTokens(t *testing.T, s store.Store) {
	ctx := t.Context()
	createVehicles(t, s, "car-1", "car-2")
	hash := []byte{0x00, 0x01, 0xfe, 0xff, 0x10}
	tok := hubv1.BootstrapToken{ID: "t1", VehicleID: "car-1", Expires: at(time.Hour), CreatedBy: "ops", Created: at(0),
		Token: "t1.secret", Used: ptr(at(0))}
	must(t, "create", s.CreateToken(ctx, tok, hash))
	must(t, "create another", s.CreateToken(ctx, hubv1.BootstrapToken{ID: "t0", VehicleID: "car-1", Expires: at(time.Hour), Created: at(0)}, []byte("other")))
	must(t, "create for car-2", s.CreateToken(ctx, hubv1.BootstrapToken{ID: "t2", VehicleID: "car-2", Expires: at(time.Hour), Created: at(0)}, hash))
	wantErr(t, "create taken ID", s.CreateToken(ctx, hubv1.BootstrapToken{ID: "t1", VehicleID: "car-2", Expires: at(time.Hour)}, hash), store.ErrExists)
	wantErr(t, "create for a missing vehicle", s.CreateToken(ctx, hubv1.BootstrapToken{ID: "t9", VehicleID: "car-9", Expires: at(time.Hour)}, hash), store.ErrNotFound)

	// The secret's hash and the token string are never listed; Used is
	// the store's, not the caller's.
	listed := hubv1.BootstrapToken{ID: "t1", VehicleID: "car-1", Expires: stored(tok.Expires), CreatedBy: "ops", Created: stored(tok.Created)}
	unused := hubv1.BootstrapToken{ID: "t0", VehicleID: "car-1", Expires: stored(at(time.Hour)), Created: stored(at(0))}
	list, err := s.ListTokens(ctx, "car-1")
	must(t, "list", err)
	if d := diff([]hubv1.BootstrapToken{unused, listed}, list); d != "" {
		t.Errorf("list (-want +got):\n%s", d)
	}
	all, err := s.ListTokens(ctx, "")
	must(t, "list all", err)
	if len(all) != 3 {
		t.Errorf("list all: %d tokens, want 3", len(all))
	}

	for _, tc := range []struct {
		name string
		id   string
		hash []byte
		now  time.Time
		want string
		err  error
	}{
		{"unknown ID", "nope", hash, at(0), "", store.ErrTokenInvalid},
		{"wrong secret", "t1", []byte("wrong"), at(0), "", store.ErrTokenInvalid},
		{"empty secret", "t1", nil, at(0), "", store.ErrTokenInvalid},
		{"another token's secret", "t1", []byte("other"), at(0), "", store.ErrTokenInvalid},
		{"at its expiry", "t2", hash, at(time.Hour), "", store.ErrTokenInvalid},
		{"after its expiry", "t2", hash, at(2 * time.Hour), "", store.ErrTokenInvalid},
		{"valid", "t1", hash, at(time.Minute), "car-1", nil},
		{"used", "t1", hash, at(2 * time.Minute), "", store.ErrTokenInvalid},
		{"a microsecond before its expiry", "t2", hash, at(time.Hour - time.Microsecond), "car-2", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.UseToken(ctx, tc.id, tc.hash, tc.now)
			wantErr(t, "use", err, tc.err)
			if got != tc.want {
				t.Errorf("use = %q, want %q", got, tc.want)
			}
		})
	}
	list, err = s.ListTokens(ctx, "car-1")
	must(t, "list", err)
	listed.Used = ptr(stored(at(time.Minute)))
	if d := diff([]hubv1.BootstrapToken{unused, listed}, list); d != "" {
		t.Errorf("list after use (-want +got):\n%s", d)
	}
}

func testUseTokenOnce(t *testing.T, s store.Store) {
	ctx := t.Context()
	createVehicles(t, s, "car-1")
	hash := []byte("secret-hash")
	must(t, "create", s.CreateToken(ctx, hubv1.BootstrapToken{ID: "t1", VehicleID: "car-1", Expires: at(time.Hour), Created: at(0)}, hash))
	const n = 20
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		mu    sync.Mutex
		won   []string
		errs  []error
	)
	for range n {
		wg.Go(func() {
			<-start
			v, err := s.UseToken(ctx, "t1", hash, at(time.Minute))
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				won = append(won, v)
			} else if !errors.Is(err, store.ErrTokenInvalid) {
				errs = append(errs, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d calls failed otherwise than ErrTokenInvalid, the first: %v", len(errs), errs[0])
	}
	if len(won) != 1 || won[0] != "car-1" {
		t.Fatalf("%d of %d concurrent uses succeeded (%v), want exactly one for car-1", len(won), n, won)
	}
}

func testOperatorTokens(t *testing.T, s store.Store) {
	ctx := t.Context()
	toks := []store.OperatorToken{
		{Name: "zed", Scope: store.ScopeRead, Hash: []byte{1, 2, 3}, Created: at(0)},
		{Name: "admin", Scope: store.ScopeAdmin, Hash: []byte{0, 255, 7}, Created: at(time.Second)},
	}
	for _, tok := range toks {
		must(t, "create "+tok.Name, s.CreateOperatorToken(ctx, tok))
	}
	want := func(tok store.OperatorToken) store.OperatorToken { tok.Created = stored(tok.Created); return tok }
	wantErr(t, "create taken name", s.CreateOperatorToken(ctx, store.OperatorToken{Name: "zed", Scope: store.ScopeRead, Hash: []byte{9}}), store.ErrExists)
	wantErr(t, "create taken hash", s.CreateOperatorToken(ctx, store.OperatorToken{Name: "new", Scope: store.ScopeRead, Hash: []byte{1, 2, 3}}), store.ErrExists)

	got, err := s.OperatorTokenByHash(ctx, []byte{0, 255, 7})
	must(t, "by hash", err)
	if d := diff(want(toks[1]), got); d != "" {
		t.Errorf("by hash (-want +got):\n%s", d)
	}
	_, err = s.OperatorTokenByHash(ctx, []byte{0, 255})
	wantErr(t, "by unknown hash", err, store.ErrNotFound)

	list, err := s.ListOperatorTokens(ctx)
	must(t, "list", err)
	if d := diff([]store.OperatorToken{want(toks[1]), want(toks[0])}, list); d != "" {
		t.Errorf("list (-want +got):\n%s", d)
	}
	must(t, "delete", s.DeleteOperatorToken(ctx, "zed"))
	wantErr(t, "delete again", s.DeleteOperatorToken(ctx, "zed"), store.ErrNotFound)
	_, err = s.OperatorTokenByHash(ctx, []byte{1, 2, 3})
	wantErr(t, "by deleted token's hash", err, store.ErrNotFound)
	list, err = s.ListOperatorTokens(ctx)
	must(t, "list", err)
	if len(list) != 1 {
		t.Errorf("after delete: %d tokens, want 1", len(list))
	}
}
