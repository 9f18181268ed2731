package api

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"github.com/misaki-io/misaki/internal/hub/store"
)

// maxBody bounds request bodies (a deployment's values are the largest).
const maxBody = 4 << 20

// apiError is an error with the HTTP status and field it maps to.
type apiError struct {
	code  int
	field string
	msg   string
}

func (e *apiError) Error() string { return e.msg }

func errorf(code int, field, format string, args ...any) error {
	return &apiError{code: code, field: field, msg: fmt.Sprintf(format, args...)}
}

func badRequest(field, format string, args ...any) error {
	return errorf(http.StatusBadRequest, field, format, args...)
}

// writeError answers err as a hubv1.Error: an apiError as it says, store
// sentinels as their natural status, anything else 500 (logged, not shown).
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	e := hubv1.Error{Code: http.StatusInternalServerError, Message: "internal error"}
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		e = hubv1.Error{Code: ae.code, Message: ae.msg, Field: ae.field}
	case errors.Is(err, store.ErrNotFound):
		e = hubv1.Error{Code: http.StatusNotFound, Message: storeMessage(err)}
	case errors.Is(err, store.ErrExists):
		e = hubv1.Error{Code: http.StatusConflict, Message: storeMessage(err)}
	case errors.Is(err, store.ErrConflict):
		e = hubv1.Error{Code: http.StatusConflict, Message: storeMessage(err) + ": read it again and retry"}
	case errors.Is(err, store.ErrDigestMismatch):
		e = hubv1.Error{Code: http.StatusConflict, Message: err.Error()}
	case errors.Is(err, store.ErrBadCursor):
		e = hubv1.Error{Code: http.StatusBadRequest, Message: "after: " + storeMessage(err), Field: "after"}
	case errors.Is(err, store.ErrTokenInvalid):
		e = hubv1.Error{Code: http.StatusUnauthorized, Message: err.Error()}
	default:
		if r.Context().Err() != nil {
			return
		}
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeJSON(w, e.Code, e)
}

// storeMessage turns a store error ("sqlite: get vehicle car-9: not
// found") into what a user reads ("vehicle car-9 not found"): the dialect
// and the store's verb are not theirs to know.
func storeMessage(err error) string {
	msg := err.Error()
	for _, p := range []string{"sqlite: ", "postgres: "} {
		msg = strings.TrimPrefix(msg, p)
	}
	for _, verb := range []string{"get ", "delete ", "update ", "create ", "put ", "pin "} {
		if rest, ok := strings.CutPrefix(msg, verb); ok {
			msg = rest
			break
		}
	}
	for _, sentinel := range []error{store.ErrNotFound, store.ErrExists} {
		msg = strings.Replace(msg, ": "+sentinel.Error(), " "+sentinel.Error(), 1)
	}
	return msg
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, `{"code":500,"message":"encode response"}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

// writeRead answers a GET with an ETag over the body, and 304 when the
// client's If-None-Match has it.
func writeRead(w http.ResponseWriter, r *http.Request, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, `{"code":500,"message":"encode response"}`, http.StatusInternalServerError)
		return
	}
	sum := sha256.Sum256(b)
	etag := `"` + hex.EncodeToString(sum[:16]) + `"`
	w.Header().Set("ETag", etag)
	if inm := r.Header.Get("If-None-Match"); inm != "" && inm == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(append(b, '\n'))
}

// decode reads a JSON body into v, refusing unknown fields and trailing
// data, with errors that say where.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		var me *http.MaxBytesError
		switch {
		case errors.As(err, &se):
			return badRequest("", "body: JSON syntax error at byte %d: %v", se.Offset, err)
		case errors.As(err, &te):
			return badRequest(te.Field, "body: field %q: want %s, got JSON %s", te.Field, te.Type, te.Value)
		case errors.As(err, &me):
			return errorf(http.StatusRequestEntityTooLarge, "", "body: larger than %d bytes", me.Limit)
		default:
			return badRequest("", "body: %v", err)
		}
	}
	if dec.More() {
		return badRequest("", "body: more than one JSON value")
	}
	return nil
}

// page reads ?limit= and ?after=.
func page(r *http.Request) (store.Page, error) {
	p := store.Page{After: r.URL.Query().Get("after"), Limit: 100}
	if l := r.URL.Query().Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			return p, badRequest("limit", "limit: want a number from 1 to 1000, got %q", l)
		}
		p.Limit = n
	}
	return p, nil
}
