package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/enrol"
	"github.com/misaki-io/misaki/internal/hub/store"
)

// Principal is who made a request.
type Principal struct {
	// Operator is the operator token's name; Vehicle the vehicle ID from
	// the client certificate. One of them is set.
	Operator string
	Scope    string // operator scope: read, admin or cloud-agent
	Vehicle  string
	via      string // how an unauthenticated request was vouched for (enrolment's token)
}

// Actor is the principal as the audit log names it.
func (p Principal) Actor() string {
	switch {
	case p.via != "":
		return p.via
	case p.Vehicle != "":
		return "vehicle/" + p.Vehicle
	case p.Operator != "":
		return "operator/" + p.Operator
	}
	return "anonymous"
}

type principalKey struct{}

func principal(ctx context.Context) Principal {
	p, _ := ctx.Value(principalKey{}).(Principal)
	return p
}

// OperatorTokenPrefix starts every operator token, so one pasted in the
// wrong place is recognisable (and found by secret scanners).
const OperatorTokenPrefix = "mkh_"

// NewOperatorSecret returns a new operator token secret and its hash.
func NewOperatorSecret() (secret string, hash []byte) {
	b := make([]byte, 24)
	rand.Read(b)
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	out := make([]byte, len(b))
	for i, c := range b {
		out[i] = alphabet[int(c)%len(alphabet)]
	}
	secret = OperatorTokenPrefix + string(out)
	return secret, HashOperatorSecret(secret)
}

// HashOperatorSecret is what the store keeps of an operator token.
func HashOperatorSecret(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}

// tokenCacheTTL is how long a looked-up operator token is trusted without
// asking the store again: a deleted token stops working within it.
const tokenCacheTTL = 10 * time.Second

type tokenCache struct {
	mu sync.Mutex // guards m
	m  map[string]cachedToken
}

type cachedToken struct {
	tok     store.OperatorToken
	err     error
	expires time.Time
}

// authenticate finds the principal: a verified client certificate is a
// vehicle; a bearer token an operator. Neither: the zero Principal.
func (s *Server) authenticate(r *http.Request) (Principal, error) {
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		id, err := enrol.VehicleID(r.TLS.VerifiedChains[0][0])
		if err != nil {
			return Principal{}, errorf(http.StatusUnauthorized, "", "client certificate: %v", err)
		}
		return Principal{Vehicle: id}, nil
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		return Principal{}, nil
	}
	secret, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		return Principal{}, errorf(http.StatusUnauthorized, "", "Authorization: want \"Bearer <token>\"")
	}
	tok, err := s.operatorToken(r.Context(), strings.TrimSpace(secret))
	if err != nil {
		return Principal{}, err
	}
	return Principal{Operator: tok.Name, Scope: tok.Scope}, nil
}

func (s *Server) operatorToken(ctx context.Context, secret string) (store.OperatorToken, error) {
	key := string(HashOperatorSecret(secret))
	now := s.clk.Now()
	s.tokens.mu.Lock()
	c, ok := s.tokens.m[key]
	s.tokens.mu.Unlock()
	if ok && now.Before(c.expires) {
		return c.tok, c.err
	}
	tok, err := s.st.OperatorTokenByHash(ctx, []byte(key))
	if errors.Is(err, store.ErrNotFound) {
		err = errorf(http.StatusUnauthorized, "", "unknown operator token")
	} else if err != nil {
		return tok, err
	}
	s.tokens.mu.Lock()
	if len(s.tokens.m) > 10000 {
		clear(s.tokens.m)
	}
	s.tokens.m[key] = cachedToken{tok: tok, err: err, expires: now.Add(tokenCacheTTL)}
	s.tokens.mu.Unlock()
	return tok, err
}

// Access levels of a route.
type access int

const (
	public        access = iota // anyone (enrolment, trust roots, OpenAPI)
	read                        // an operator token with the read or admin scope
	admin                       // an operator token with the admin scope
	vehicle                     // the vehicle named by {id} (its certificate), or an admin
	readOrVehicle               // a read or admin token, or the vehicle named by {id}
	// agent is vehicle, and also a cloud-agent token for any {id}; the
	// handler holds such a token to the cloud half (cloudOnly).
	agent
	feed // an operator token with the admin or cloud-agent scope
)

// guard wraps h with authentication and the access check.
func (s *Server) guard(a access, h func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.authenticate(r)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if err := allowed(a, p, r); err != nil {
			s.writeError(w, r, err)
			return
		}
		if p.Vehicle != "" {
			s.seen(r.Context(), p.Vehicle)
		}
		if err := h(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p))); err != nil {
			s.writeError(w, r, err)
		}
	})
}

func allowed(a access, p Principal, r *http.Request) error {
	unauth := errorf(http.StatusUnauthorized, "", "this endpoint needs an operator token (Authorization: Bearer) or a vehicle certificate")
	forbidden := func(why string) error { return errorf(http.StatusForbidden, "", "%s", why) }
	cloudAgent := func() error {
		return forbidden("operator token " + p.Operator + " has the cloud-agent scope: it may only read vehicles' cloud halves (GET /v1/vehicles/{id}/desired?half=cloud), report on them and follow /v1/changes")
	}
	switch a {
	case public:
		return nil
	case read, admin, feed:
		if p.Operator == "" {
			if p.Vehicle != "" {
				return forbidden("vehicles may not use this endpoint")
			}
			return unauth
		}
		switch {
		case p.Scope == store.ScopeAdmin:
		case a == feed && p.Scope == store.ScopeCloudAgent:
		case p.Scope == store.ScopeCloudAgent:
			return cloudAgent()
		case a == read && p.Scope == store.ScopeRead:
		case a == feed:
			return forbidden("operator token " + p.Operator + " is read-only: the change feed is for admin and cloud-agent tokens")
		default:
			return forbidden("operator token " + p.Operator + " is read-only")
		}
		return nil
	case vehicle, readOrVehicle, agent:
		if p.Vehicle != "" {
			if p.Vehicle != r.PathValue("id") {
				return forbidden("vehicle " + p.Vehicle + " may only use its own state")
			}
			return nil
		}
		if p.Operator == "" {
			return unauth
		}
		switch {
		case p.Scope == store.ScopeAdmin:
		case a == agent && p.Scope == store.ScopeCloudAgent:
		case p.Scope == store.ScopeCloudAgent:
			return cloudAgent()
		case a == readOrVehicle && p.Scope == store.ScopeRead:
		default:
			return forbidden("operator token " + p.Operator + " is read-only")
		}
		return nil
	}
	return forbidden("no access")
}

// cloudOnly holds a cloud-agent token to the cloud half: half is the one
// the request names (the query's, or the report's).
func cloudOnly(p Principal, half string) error {
	if p.Operator != "" && p.Scope == store.ScopeCloudAgent && half != hubv1.HalfCloud {
		return errorf(http.StatusForbidden, "half", "operator token %s has the cloud-agent scope: it may only use the cloud half (half=cloud), not %q", p.Operator, half)
	}
	return nil
}
