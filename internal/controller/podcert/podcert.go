// Package podcert is the controller's certificate endpoint, where a proxy
// exchanges its pod's projected service-account token and a certificate
// request for a short-lived certificate naming its pod (the wire format
// is package identity's, the proxy's side).
//
// The token is checked by the API server (a TokenReview for the audience
// the injector asks the kubelet for), and must be bound to a pod: such
// tokens carry the pod's name and UID, and the endpoint checks that the
// pod exists with that UID, runs as the token's service account, and has
// not finished. The certificate then names that pod, whatever the request
// asked for: only the request's public key is used. A token stolen from a
// deleted pod is refused, and so is one for another audience.
package podcert

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/misaki-io/misaki/internal/controller/ca"
	"github.com/misaki-io/misaki/internal/proxy/xds/identity"
)

// The extra fields the API server puts in a pod-bound token's user info.
const (
	extraPodName = "authentication.kubernetes.io/pod-name"
	extraPodUID  = "authentication.kubernetes.io/pod-uid"
)

// DefaultAudience is the audience of the tokens the endpoint accepts
// unless Handler.Audience says otherwise.
const DefaultAudience = "misaki"

// maxBody bounds a request: a CSR is well under a kilobyte.
const maxBody = 64 << 10

// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups="",resources=pods,verbs=get

// TokenReviewer asks the API server whose a token is, for audiences.
type TokenReviewer interface {
	ReviewToken(ctx context.Context, token string, audiences []string) (authv1.TokenReviewStatus, error)
}

// TokenReviewerFunc adapts a function to TokenReviewer.
type TokenReviewerFunc func(ctx context.Context, token string, audiences []string) (authv1.TokenReviewStatus, error)

// ReviewToken calls f.
func (f TokenReviewerFunc) ReviewToken(ctx context.Context, token string, audiences []string) (authv1.TokenReviewStatus, error) {
	return f(ctx, token, audiences)
}

// APIReviewer reviews tokens with TokenReviews created through c.
func APIReviewer(c client.Client) TokenReviewer {
	return TokenReviewerFunc(func(ctx context.Context, token string, audiences []string) (authv1.TokenReviewStatus, error) {
		tr := &authv1.TokenReview{Spec: authv1.TokenReviewSpec{Token: token, Audiences: audiences}}
		if err := c.Create(ctx, tr); err != nil {
			return authv1.TokenReviewStatus{}, fmt.Errorf("token review: %w", err)
		}
		return tr.Status, nil
	})
}

// Issuer signs a certificate for an identity (ca.Authority).
type Issuer interface {
	Issue(pub crypto.PublicKey, id ca.Identity) ([]byte, *x509.Certificate, error)
}

var _ Issuer = (*ca.Authority)(nil)

// Outcomes counted through Handler.Outcome.
const (
	Issued          = "issued"
	Unauthenticated = "unauthenticated" // no token, or the API server refused it
	Forbidden       = "forbidden"       // a valid token that does not name a live pod
	BadRequest      = "bad_request"     // not a usable certificate request
	Failed          = "error"           // the controller's own failure
)

// Handler serves identity.Path.
type Handler struct {
	CA       Issuer
	Reviewer TokenReviewer
	// Pods reads pods; uncached (the controller does not watch them).
	Pods client.Reader
	// Audience the tokens must be for. Default DefaultAudience.
	Audience string
	Log      *slog.Logger
	// Outcome, if set, counts each request's outcome.
	Outcome func(outcome string)
}

var _ http.Handler = (*Handler)(nil)

// refusal is an answer other than a certificate.
type refusal struct {
	status  int
	outcome string
	msg     string
}

func (r *refusal) Error() string { return r.msg }

func refuse(status int, outcome, format string, args ...any) error {
	return &refusal{status, outcome, fmt.Sprintf(format, args...)}
}

// ServeHTTP answers a certificate request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != identity.Path {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeJSON(w, http.StatusMethodNotAllowed, identity.ErrorResponse{Error: "POST a certificate request"})
		return
	}
	chain, id, err := h.issue(r)
	var rf *refusal
	switch {
	case errors.As(err, &rf):
	case err != nil:
		rf = &refusal{http.StatusInternalServerError, Failed, err.Error()}
	}
	if rf != nil {
		h.count(rf.outcome)
		pod := ""
		if id.Pod != "" {
			pod = id.Node()
		}
		h.Log.Warn("certificate refused", "reason", rf.msg, "outcome", rf.outcome, "pod", pod, "remote", r.RemoteAddr)
		writeJSON(w, rf.status, identity.ErrorResponse{Error: rf.msg})
		return
	}
	h.count(Issued)
	writeJSON(w, http.StatusOK, identity.Response{CertificateChain: string(chain)})
}

func (h *Handler) count(outcome string) {
	if h.Outcome != nil {
		h.Outcome(outcome)
	}
}

// issue checks the request and signs its key; id is as far as it got.
func (h *Handler) issue(r *http.Request) ([]byte, ca.Identity, error) {
	var id ca.Identity
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if token = strings.TrimSpace(token); !ok || token == "" {
		return nil, id, refuse(http.StatusUnauthorized, Unauthenticated, "no bearer token: send the pod's projected service-account token")
	}
	pub, err := readCSR(r)
	if err != nil {
		return nil, id, err
	}
	rv, err := h.review(r.Context(), token)
	id = rv.Identity
	if err != nil {
		return nil, id, err
	}
	if err := h.checkPod(r.Context(), rv); err != nil {
		return nil, id, err
	}
	chain, cert, err := h.CA.Issue(pub, id)
	if err != nil {
		return nil, id, fmt.Errorf("issue: %w", err)
	}
	h.Log.Info("certificate issued", "pod", id.Node(), "serviceAccount", id.ServiceAccount, "serial", cert.SerialNumber.Text(16), "notAfter", cert.NotAfter.UTC())
	return chain, id, nil
}

// reviewed is an identity from a token, with the pod UID it is bound to.
type reviewed struct {
	ca.Identity
	uid string
}

// review asks the API server whose token is, and reads the pod it is bound
// to from the answer.
func (h *Handler) review(ctx context.Context, token string) (reviewed, error) {
	var id reviewed
	aud := h.Audience
	if aud == "" {
		aud = DefaultAudience
	}
	st, err := h.Reviewer.ReviewToken(ctx, token, []string{aud})
	if err != nil {
		return id, refuse(http.StatusServiceUnavailable, Failed, "the API server could not review the token: %v", err)
	}
	if !st.Authenticated || st.Error != "" {
		msg := st.Error
		if msg == "" {
			msg = "not authenticated"
		}
		return id, refuse(http.StatusUnauthorized, Unauthenticated, "the API server refused the token (audience %s): %s", aud, msg)
	}
	if len(st.Audiences) > 0 && !slices.Contains(st.Audiences, aud) {
		return id, refuse(http.StatusUnauthorized, Unauthenticated, "the token is for %v, not audience %s", st.Audiences, aud)
	}
	ns, sa, ok := strings.Cut(strings.TrimPrefix(st.User.Username, "system:serviceaccount:"), ":")
	if !strings.HasPrefix(st.User.Username, "system:serviceaccount:") || !ok {
		return id, refuse(http.StatusForbidden, Forbidden, "%s is not a service account", st.User.Username)
	}
	id.Namespace, id.ServiceAccount = ns, sa
	name, uid := first(st.User.Extra[extraPodName]), first(st.User.Extra[extraPodUID])
	if name == "" || uid == "" {
		return id, refuse(http.StatusForbidden, Forbidden, "the token of %s is not bound to a pod: mount a projected service-account token (the injector does)", st.User.Username)
	}
	id.Pod, id.uid = name, uid
	return id, nil
}

// checkPod checks that the token's pod is there, is the one the token was
// made for, runs as its service account and has not finished.
func (h *Handler) checkPod(ctx context.Context, id reviewed) error {
	var pod corev1.Pod
	if err := h.Pods.Get(ctx, client.ObjectKey{Namespace: id.Namespace, Name: id.Pod}, &pod); err != nil {
		if apierrors.IsNotFound(err) {
			return refuse(http.StatusForbidden, Forbidden, "pod %s does not exist", id.Node())
		}
		return refuse(http.StatusServiceUnavailable, Failed, "get pod %s: %v", id.Node(), err)
	}
	if string(pod.UID) != id.uid {
		return refuse(http.StatusForbidden, Forbidden, "pod %s is uid %s; the token is for uid %s, a pod of that name that is gone", id.Node(), pod.UID, id.uid)
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	if sa != id.ServiceAccount {
		return refuse(http.StatusForbidden, Forbidden, "pod %s runs as service account %s, not %s", id.Node(), sa, id.ServiceAccount)
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return refuse(http.StatusForbidden, Forbidden, "pod %s has finished (%s)", id.Node(), pod.Status.Phase)
	}
	return nil
}

// readCSR decodes the request's CSR and returns its public key, if the
// CSR is signed by it and it is a key the CA signs.
func readCSR(r *http.Request) (crypto.PublicKey, error) {
	var req identity.Request
	if err := json.NewDecoder(io.LimitReader(r.Body, maxBody)).Decode(&req); err != nil {
		return nil, refuse(http.StatusBadRequest, BadRequest, "the body is not a JSON certificate request: %v", err)
	}
	blk, _ := pem.Decode([]byte(req.CSR))
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" {
		return nil, refuse(http.StatusBadRequest, BadRequest, "csr: want a PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		return nil, refuse(http.StatusBadRequest, BadRequest, "csr: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, refuse(http.StatusBadRequest, BadRequest, "csr: not signed by its key: %v", err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, refuse(http.StatusBadRequest, BadRequest, "csr: ECDSA curve %s; use P-256 or P-384", k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, refuse(http.StatusBadRequest, BadRequest, "csr: a %d-bit RSA key; use 2048 bits or more", k.N.BitLen())
		}
	case ed25519.PublicKey:
	default:
		return nil, refuse(http.StatusBadRequest, BadRequest, "csr: a %T key; use ECDSA, RSA or Ed25519", k)
	}
	return csr.PublicKey, nil
}

func first(v authv1.ExtraValue) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
