package podcert

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/misaki-io/misaki/internal/controller/ca"
	"github.com/misaki-io/misaki/internal/proxy/xds/identity"
)

// tokens the fake API server knows: token -> what a TokenReview says.
var tokens = map[string]authv1.TokenReviewStatus{
	"good":           bound("apps", "telemetry", "client", "uid-1"),
	"other-audience": {Authenticated: false, Error: "token audiences [\"api\"] is invalid for the target audiences [\"misaki\"]"},
	"user":           {Authenticated: true, User: authv1.UserInfo{Username: "alice"}},
	"secret-token":   {Authenticated: true, User: authv1.UserInfo{Username: "system:serviceaccount:apps:telemetry"}},
	"old-pod":        bound("apps", "telemetry", "client", "uid-0"),
	"gone":           bound("apps", "telemetry", "gone", "uid-9"),
	"wrong-sa":       bound("apps", "builder", "client", "uid-1"),
	"finished":       bound("apps", "telemetry", "job", "uid-2"),
	"aud-mismatch":   {Authenticated: true, Audiences: []string{"api"}, User: bound("apps", "telemetry", "client", "uid-1").User},
}

func bound(ns, sa, pod, uid string) authv1.TokenReviewStatus {
	return authv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"misaki"}, User: authv1.UserInfo{
		Username: "system:serviceaccount:" + ns + ":" + sa,
		Extra:    map[string]authv1.ExtraValue{extraPodName: {pod}, extraPodUID: {uid}},
	}}
}

func newHandler(t *testing.T) (*Handler, *ca.Authority, map[string]int) {
	t.Helper()
	s := runtime.NewScheme()
	corev1.AddToScheme(s)
	c := fake.NewClientBuilder().WithScheme(s).WithObjects(
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "client", UID: "uid-1"}, Spec: corev1.PodSpec{ServiceAccountName: "telemetry"}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "job", UID: "uid-2"}, Spec: corev1.PodSpec{ServiceAccountName: "telemetry"},
			Status: corev1.PodStatus{Phase: corev1.PodSucceeded}},
	).Build()
	a := &ca.Authority{Client: c, Reader: c, Namespace: "misaki-system", Secret: "misaki-ca"}
	if err := a.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	outcomes := map[string]int{}
	h := &Handler{
		CA: a, Pods: c, Log: slog.New(slog.DiscardHandler),
		Reviewer: TokenReviewerFunc(func(_ context.Context, token string, aud []string) (authv1.TokenReviewStatus, error) {
			if len(aud) != 1 || aud[0] != "misaki" {
				t.Errorf("reviewed for audiences %v", aud)
			}
			if token == "api-down" {
				return authv1.TokenReviewStatus{}, errors.New("connection refused")
			}
			return tokens[token], nil
		}),
		Outcome: func(o string) { outcomes[o]++ },
	}
	return h, a, outcomes
}

func csrPEM(t *testing.T, key crypto.Signer) string {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func post(h http.Handler, token, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, identity.Path, strings.NewReader(body))
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestIssue(t *testing.T) {
	h, a, outcomes := newHandler(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	body, _ := json.Marshal(identity.Request{CSR: csrPEM(t, key)})
	w := post(h, "good", string(body))
	if w.Code != 200 {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	var resp identity.Response
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode([]byte(resp.CertificateChain))
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: a.ClientCAs(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal(err)
	}
	id, err := a.Identify(cert)
	if err != nil || id.Node() != "apps/client" || id.ServiceAccount != "telemetry" || !cert.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) {
		t.Errorf("issued %+v (%v) for key %v", id, err, cert.PublicKey)
	}
	if outcomes[Issued] != 1 {
		t.Errorf("outcomes %v", outcomes)
	}
}

// What the CSR asks for does not matter: the certificate names the
// token's pod.
func TestCSRNamesIgnored(t *testing.T) {
	h, a, _ := newHandler(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{"kube-apiserver"}, EmailAddresses: []string{"root@example.com"}}, key)
	body, _ := json.Marshal(identity.Request{CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))})
	w := post(h, "good", string(body))
	var resp identity.Response
	json.Unmarshal(w.Body.Bytes(), &resp)
	blk, _ := pem.Decode([]byte(resp.CertificateChain))
	if blk == nil {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	cert, _ := x509.ParseCertificate(blk.Bytes)
	if len(cert.DNSNames) != 0 || len(cert.EmailAddresses) != 0 {
		t.Errorf("the certificate took the CSR's names: %v %v", cert.DNSNames, cert.EmailAddresses)
	}
	if id, _ := a.Identify(cert); id.Node() != "apps/client" {
		t.Errorf("identity %+v", id)
	}
}

func TestRefusals(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	good, _ := json.Marshal(identity.Request{CSR: csrPEM(t, ec)})
	req := func(k crypto.Signer) string {
		b, _ := json.Marshal(identity.Request{CSR: csrPEM(t, k)})
		return string(b)
	}
	for name, tc := range map[string]struct {
		token, body string
		code        int
		outcome     string
		want        string
	}{
		"no token":         {"", string(good), 401, Unauthenticated, "no bearer token"},
		"other audience":   {"other-audience", string(good), 401, Unauthenticated, "refused the token (audience misaki)"},
		"audience answer":  {"aud-mismatch", string(good), 401, Unauthenticated, "not audience misaki"},
		"a user":           {"user", string(good), 403, Forbidden, "alice is not a service account"},
		"a Secret's token": {"secret-token", string(good), 403, Forbidden, "not bound to a pod"},
		"pod gone":         {"gone", string(good), 403, Forbidden, "pod apps/gone does not exist"},
		"pod recreated":    {"old-pod", string(good), 403, Forbidden, "the token is for uid uid-0"},
		"service account":  {"wrong-sa", string(good), 403, Forbidden, "runs as service account telemetry, not builder"},
		"finished":         {"finished", string(good), 403, Forbidden, "has finished (Succeeded)"},
		"API server down":  {"api-down", string(good), 503, Failed, "could not review the token: connection refused"},
		"not JSON":         {"good", "csr", 400, BadRequest, "not a JSON certificate request"},
		"not a CSR":        {"good", `{"csr": "hello"}`, 400, BadRequest, "want a PEM CERTIFICATE REQUEST"},
		"small RSA key":    {"good", req(rsa1024), 400, BadRequest, "1024-bit RSA key"},
		"P-224":            {"good", req(p224), 400, BadRequest, "ECDSA curve P-224"},
	} {
		t.Run(name, func(t *testing.T) {
			h, _, outcomes := newHandler(t)
			w := post(h, tc.token, tc.body)
			var e identity.ErrorResponse
			json.Unmarshal(w.Body.Bytes(), &e)
			if w.Code != tc.code || !strings.Contains(e.Error, tc.want) || outcomes[tc.outcome] != 1 {
				t.Errorf("%d %q (outcomes %v), want %d saying %q, counted %s", w.Code, e.Error, outcomes, tc.code, tc.want, tc.outcome)
			}
		})
	}
	h, _, _ := newHandler(t)
	r := httptest.NewRequest(http.MethodGet, identity.Path, nil)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 405 {
		t.Errorf("GET: %d", w.Code)
	}
	r = httptest.NewRequest(http.MethodPost, "/other", bytes.NewReader(good))
	w = httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 404 {
		t.Errorf("another path: %d", w.Code)
	}
}
