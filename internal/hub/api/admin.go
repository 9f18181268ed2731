package api

import (
	"net/http"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/store"
)

func (s *Server) getRoot(w http.ResponseWriter, r *http.Request) error {
	_, root := s.trust.Root()
	w.Header().Set("Content-Type", "application/json")
	w.Write(root)
	return nil
}

// getRootVersion serves /v1/trust/root/{n}.json, the TUF way agents walk
// the chain from their pinned root.
func (s *Server) getRootVersion(w http.ResponseWriter, r *http.Request) error {
	f := r.PathValue("file")
	n, err := strconv.ParseInt(strings.TrimSuffix(f, ".json"), 10, 64)
	if err != nil || !strings.HasSuffix(f, ".json") || n < 1 {
		return errorf(http.StatusNotFound, "", "no root %q: roots are /v1/trust/root/<version>.json", f)
	}
	b, err := s.trust.RootVersion(n)
	if err != nil {
		return errorf(http.StatusNotFound, "", "no root version %d", n)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
	return nil
}

func (s *Server) rotateKeys(w http.ResponseWriter, r *http.Request) error {
	var req hubv1.RotateRequest
	if r.ContentLength != 0 {
		if err := decode(r, &req); err != nil {
			return err
		}
	}
	if req.Role == "" {
		req.Role = "targets"
	}
	if req.Role != "targets" && req.Role != "root" {
		return badRequest("role", "role: want targets or root, got %q", req.Role)
	}
	v, err := s.trust.Rotate(r.Context(), req.Role)
	if err != nil {
		return errorf(http.StatusConflict, "role", "rotate %s key: %v", req.Role, err)
	}
	s.audit(r, "rotate", "keys/"+req.Role, "root version "+strconv.FormatInt(v, 10))
	// Every vehicle gets a revision signed with the new key.
	if err := s.markDirty(r.Context(), store.Dirty{ID: store.AllVehicles, Force: true}); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, hubv1.RotateResult{Role: req.Role, RootVersion: v})
	return nil
}

func (s *Server) listOperatorTokens(w http.ResponseWriter, r *http.Request) error {
	ts, err := s.st.ListOperatorTokens(r.Context())
	if err != nil {
		return err
	}
	out := []hubv1.OperatorToken{}
	for _, t := range ts {
		out = append(out, hubv1.OperatorToken{Name: t.Name, Scope: t.Scope, Created: t.Created})
	}
	writeRead(w, r, hubv1.List[hubv1.OperatorToken]{Items: out})
	return nil
}

func (s *Server) createOperatorToken(w http.ResponseWriter, r *http.Request) error {
	var req hubv1.OperatorToken
	if err := decode(r, &req); err != nil {
		return err
	}
	if errs := validation.IsDNS1123Label(req.Name); len(errs) > 0 {
		return badRequest("name", "name: %q: %s", req.Name, strings.Join(errs, "; "))
	}
	switch req.Scope {
	case store.ScopeRead, store.ScopeAdmin, store.ScopeCloudAgent:
	default:
		return badRequest("scope", "scope: want read, admin or cloud-agent, got %q", req.Scope)
	}
	secret, hash := NewOperatorSecret()
	t := store.OperatorToken{Name: req.Name, Scope: req.Scope, Hash: hash, Created: s.clk.Now().UTC()}
	if err := s.st.CreateOperatorToken(r.Context(), t); err != nil {
		return err
	}
	s.audit(r, "create", "operator-tokens/"+req.Name, "scope "+req.Scope)
	writeJSON(w, http.StatusCreated, hubv1.OperatorToken{Name: t.Name, Scope: t.Scope, Created: t.Created, Token: secret})
	return nil
}

func (s *Server) deleteOperatorToken(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	if name == principal(r.Context()).Operator {
		return errorf(http.StatusConflict, "name", "operator token %s is the one this request uses; delete it with another admin token", name)
	}
	if err := s.st.DeleteOperatorToken(r.Context(), name); err != nil {
		return err
	}
	s.audit(r, "delete", "operator-tokens/"+name, "")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) listAudit(w http.ResponseWriter, r *http.Request) error {
	p, err := page(r)
	if err != nil {
		return err
	}
	es, next, err := s.st.ListAudit(r.Context(), p)
	if err != nil {
		return err
	}
	writeRead(w, r, hubv1.List[hubv1.AuditEntry]{Items: orEmpty(es), Next: next})
	return nil
}

// whoami answers the request's own operator token, without its secret:
// a UI shows the name and decides which actions to offer by the scope.
func (s *Server) whoami(w http.ResponseWriter, r *http.Request) error {
	p := principal(r.Context())
	writeRead(w, r, hubv1.OperatorToken{Name: p.Operator, Scope: p.Scope})
	return nil
}
