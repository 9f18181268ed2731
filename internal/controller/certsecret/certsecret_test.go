package certsecret

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

func newSecret(t *testing.T, funcs interceptor.Funcs) Secret {
	t.Helper()
	s := runtime.NewScheme()
	if err := corev1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(s).WithInterceptorFuncs(funcs).Build()
	return Secret{Client: c, Reader: c, Namespace: "ns", Name: "certs", Type: corev1.SecretTypeTLS, Component: "test", Issued: "issued"}
}

// logged collects the "why" of each record s's Log gets.
func logged(s *Secret) *[]string {
	var whys []string
	s.Log = slog.New(handlerFunc(func(r slog.Record) {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "why" && r.Message == "issued" {
				whys = append(whys, a.Value.String())
			}
			return true
		})
	}))
	return &whys
}

type handlerFunc func(slog.Record)

func (h handlerFunc) Enabled(context.Context, slog.Level) bool      { return true }
func (h handlerFunc) Handle(_ context.Context, r slog.Record) error { h(r); return nil }
func (h handlerFunc) WithAttrs([]slog.Attr) slog.Handler            { return h }
func (h handlerFunc) WithGroup(string) slog.Handler                 { return h }

// counter is a RotateFunc that writes n, counting its calls, or leaves the
// data alone when it already holds n.
type counter struct{ calls, n int }

func (c *counter) rotate(data map[string][]byte) (map[string][]byte, string, error) {
	c.calls++
	want := []byte(strings.Repeat("x", c.n))
	if bytes.Equal(data["k"], want) {
		return data, "", nil
	}
	return map[string][]byte{"k": want}, "new n", nil
}

func TestEnsure(t *testing.T) {
	s := newSecret(t, interceptor.Funcs{})
	whys := logged(&s)
	r := &counter{n: 1}
	sec, err := s.Ensure(t.Context(), r.rotate)
	if err != nil || !slices.Equal(*whys, []string{"new n"}) {
		t.Fatalf("create: %q %v", *whys, err)
	}
	if sec.Type != corev1.SecretTypeTLS || sec.Labels["app.kubernetes.io/managed-by"] != "misaki-controller" || sec.ResourceVersion == "" {
		t.Errorf("created %+v", sec.ObjectMeta)
	}
	if _, err := s.Ensure(t.Context(), r.rotate); err != nil || len(*whys) != 1 {
		t.Errorf("unchanged: %q %v", *whys, err)
	}
	r.n = 2
	if _, err := s.Ensure(t.Context(), r.rotate); err != nil || len(*whys) != 2 {
		t.Fatalf("update: %q %v", *whys, err)
	}
	if sec, err := s.Ensure(t.Context(), r.rotate); err != nil || string(sec.Data["k"]) != "xx" {
		t.Errorf("unchanged after the update: %q %v", sec.Data["k"], err)
	}
	var got corev1.Secret
	if err := s.Reader.Get(t.Context(), client.ObjectKey{Namespace: "ns", Name: "certs"}, &got); err != nil || string(got.Data["k"]) != "xx" {
		t.Errorf("stored %q, %v", got.Data["k"], err)
	}
}

// A write that loses to another replica's reads theirs and tries again;
// one that keeps losing gives up after four attempts.
func TestEnsureConflict(t *testing.T) {
	for _, tc := range []struct {
		name    string
		losses  int
		wantErr bool
	}{
		{"once", 1, false},
		{"always", 100, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			writes := 0
			s := newSecret(t, interceptor.Funcs{Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
				if writes++; writes <= tc.losses {
					return apierrors.NewAlreadyExists(schema.GroupResource{Resource: "secrets"}, obj.GetName())
				}
				return c.Create(ctx, obj, opts...)
			}})
			r := &counter{n: 1}
			_, err := s.Ensure(t.Context(), r.rotate)
			if tc.wantErr {
				if !apierrors.IsAlreadyExists(err) || !strings.HasPrefix(err.Error(), "test: write secret ns/certs: ") || r.calls != 4 {
					t.Errorf("err %v after %d attempts, want AlreadyExists after 4", err, r.calls)
				}
			} else if err != nil || r.calls != 2 {
				t.Errorf("err %v after %d attempts, want none after 2", err, r.calls)
			}
		})
	}
}

// An error other than a conflict, and rotate's own, end it at once.
func TestEnsureErrors(t *testing.T) {
	boom := errors.New("boom")
	s := newSecret(t, interceptor.Funcs{Get: func(context.Context, client.WithWatch, client.ObjectKey, client.Object, ...client.GetOption) error {
		return boom
	}})
	r := &counter{n: 1}
	if _, err := s.Ensure(t.Context(), r.rotate); !errors.Is(err, boom) || err.Error() != "test: get secret ns/certs: boom" || r.calls != 0 {
		t.Errorf("get: %v, %d rotations", err, r.calls)
	}
	s = newSecret(t, interceptor.Funcs{})
	if _, err := s.Ensure(t.Context(), func(map[string][]byte) (map[string][]byte, string, error) { return nil, "", boom }); err != boom {
		t.Errorf("rotate: %v, want it as it is", err)
	}
}

func TestSignAndPEM(t *testing.T) {
	now := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)
	caKey, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	ca, err := Sign(&x509.Certificate{Subject: pkix.Name{CommonName: "ca"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}, caKey.Public(), nil, caKey, now, 30*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.CheckSignatureFrom(ca); err != nil || !ca.NotBefore.Equal(now.Add(-Backdate)) || !ca.NotAfter.Equal(now.Add(30*24*time.Hour)) {
		t.Errorf("CA %v–%v, self-signed: %v", ca.NotBefore, ca.NotAfter, err)
	}
	key, _ := NewKey()
	leaf, err := Sign(&x509.Certificate{DNSNames: []string{"a.svc"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}},
		key.Public(), ca, caKey, now, 90*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := leaf.CheckSignatureFrom(ca); err != nil {
		t.Error(err)
	}
	if !PublicKeyMatches(leaf, key) || PublicKeyMatches(leaf, caKey) || PublicKeyMatches(leaf, nil) {
		t.Error("PublicKeyMatches")
	}
	if !HasNames(leaf, []string{"a.svc"}, []net.IP{net.ParseIP("127.0.0.1")}) || HasNames(leaf, []string{"b.svc"}, nil) ||
		HasNames(leaf, nil, []net.IP{net.ParseIP("::1")}) {
		t.Error("HasNames")
	}
	// 30 days: due with under 10 left.
	if RenewDue(ca, now.Add(19*24*time.Hour)) || !RenewDue(ca, now.Add(21*24*time.Hour)) {
		t.Error("RenewDue")
	}

	certs := EncodeCerts([]*x509.Certificate{ca, leaf})
	keys := EncodeKeys([]crypto.Signer{caKey, key})
	junk := []byte("-----BEGIN JUNK-----\nAAAA\n-----END JUNK-----\n")
	got := DecodeCerts(append(append([]byte(nil), junk...), certs...))
	if len(got) != 2 || !got[0].Equal(ca) || !got[1].Equal(leaf) {
		t.Errorf("DecodeCerts: %d certificates", len(got))
	}
	ks := DecodeKeys(append(append([]byte(nil), junk...), keys...))
	if len(ks) != 3 || ks[0] != nil || !PublicKeyMatches(ca, ks[1]) || !PublicKeyMatches(leaf, ks[2]) {
		t.Errorf("DecodeKeys: %v", ks)
	}
	if k := DecodeKey(keys); !PublicKeyMatches(ca, k) {
		t.Error("DecodeKey: not the first key")
	}
	if DecodeKey(nil) != nil || DecodeKey(junk) != nil {
		t.Error("DecodeKey of no key")
	}
}
