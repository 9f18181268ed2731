package ui

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Cookie names.
const (
	sessionCookie = "misaki_session"
	loginCookie   = "misaki_login" // the login form's double-submit token
	csrfHeader    = "X-CSRF-Token"
	csrfField     = "csrf"
)

// session is what the sealed cookie carries.
type session struct {
	Token   string `json:"t"`
	Name    string `json:"n,omitempty"` // the token's name
	ID      string `json:"i"`           // random; the CSRF token is derived from it
	Admin   bool   `json:"a"`
	Expires int64  `json:"e"` // Unix seconds

	csrf string // derived, not sealed
}

// sealer seals sessions (AES-256-GCM) and derives CSRF tokens (HMAC), with
// keys derived from the session key.
type sealer struct {
	aead    cipher.AEAD
	csrfKey []byte
}

func newSealer(key []byte) sealer {
	derive := func(label string) []byte {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(label))
		return m.Sum(nil)
	}
	block, err := aes.NewCipher(derive("misaki ui session seal"))
	if err != nil {
		panic(err) // a 32-byte key always makes a cipher
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return sealer{aead: aead, csrfKey: derive("misaki ui csrf")}
}

func (s sealer) seal(ss session) string {
	b, _ := json.Marshal(ss)
	nonce := make([]byte, s.aead.NonceSize())
	rand.Read(nonce)
	return base64.RawURLEncoding.EncodeToString(s.aead.Seal(nonce, nonce, b, []byte(sessionCookie)))
}

var errNoSession = errors.New("no session")

func (s sealer) open(v string, now time.Time) (*session, error) {
	b, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil || len(b) < s.aead.NonceSize() {
		return nil, errNoSession
	}
	n := s.aead.NonceSize()
	plain, err := s.aead.Open(nil, b[:n], b[n:], []byte(sessionCookie))
	if err != nil {
		return nil, errNoSession
	}
	var ss session
	if err := json.Unmarshal(plain, &ss); err != nil || ss.Token == "" || ss.ID == "" {
		return nil, errNoSession
	}
	if now.Unix() >= ss.Expires {
		return nil, errNoSession
	}
	ss.csrf = s.csrf(ss.ID)
	return &ss, nil
}

func (s sealer) csrf(id string) string {
	m := hmac.New(sha256.New, s.csrfKey)
	m.Write([]byte(id))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func randomID() string {
	b := make([]byte, 18)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// handler is a page or action behind the session check.
type handler func(w http.ResponseWriter, r *http.Request, ss *session) error

// session wraps h: no valid session sends the browser to the login page
// (htmx requests get HX-Redirect); a POST must carry the session's CSRF
// token and come from this origin. An API answer of 401 (the token was
// revoked) ends the session; other errors are shown as a page.
func (s *Server) session(h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ss, err := s.readSession(r)
		if err != nil {
			s.toLogin(w, r)
			return
		}
		if r.Method == http.MethodPost {
			if !sameOrigin(r) {
				http.Error(w, "cross-origin request refused", http.StatusForbidden)
				return
			}
			got := r.Header.Get(csrfHeader)
			if got == "" {
				got = r.PostFormValue(csrfField)
			}
			if subtle.ConstantTimeCompare([]byte(got), []byte(ss.csrf)) != 1 {
				http.Error(w, "missing or wrong CSRF token: reload the page and try again", http.StatusForbidden)
				return
			}
		}
		if err := h(w, r, ss); err != nil {
			if status(err) == http.StatusUnauthorized {
				s.clearSession(w, r)
				s.toLogin(w, r)
				return
			}
			if !errors.Is(err, context.Canceled) {
				s.errorPage(w, r, ss, err)
			}
		}
	})
}

func (s *Server) readSession(r *http.Request) (*session, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil, errNoSession
	}
	return s.seal.open(c.Value, s.opts.Clock.Now())
}

func (s *Server) toLogin(w http.ResponseWriter, r *http.Request) {
	next := "/ui/fleet"
	if r.Method == http.MethodGet && r.Header.Get("HX-Request") == "" {
		next = r.URL.RequestURI()
	}
	to := "/ui/login?next=" + url.QueryEscape(next)
	if r.Header.Get("HX-Request") != "" {
		w.Header().Set("HX-Redirect", to)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if r.URL.Path == "/ui/events" {
		http.Error(w, "log in first", http.StatusUnauthorized)
		return
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
}

// sameOrigin refuses a request whose Origin (or, without one, Referer)
// names another host. Browsers send Origin on every POST.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		o = r.Header.Get("Referer")
	}
	if o == "" || o == "null" {
		return o == ""
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

func (s *Server) cookie(r *http.Request, name, value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name: name, Value: value, Path: "/ui/", MaxAge: maxAge,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode,
	}
}

func (s *Server) clearSession(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, s.cookie(r, sessionCookie, "", -1))
}

type loginData struct {
	Next, Token, Error, LoginCSRF string
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	if ss, err := s.readSession(r); err == nil && ss != nil {
		http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	s.renderLogin(w, r, http.StatusOK, loginData{Next: safeNext(r.URL.Query().Get("next"))})
}

func (s *Server) renderLogin(w http.ResponseWriter, r *http.Request, code int, d loginData) {
	d.LoginCSRF = randomID()
	http.SetCookie(w, s.cookie(r, loginCookie, d.LoginCSRF, 3600))
	s.render(w, r, code, "login", page{Title: "Log in", Data: d})
}

// login checks the posted operator token against the API: GET
// /v1/whoami answers a read or admin token with its name and scope (and
// refuses any other).
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	d := loginData{Next: safeNext(r.PostFormValue("next"))}
	c, err := r.Cookie(loginCookie)
	if !sameOrigin(r) || err != nil || c.Value == "" || subtle.ConstantTimeCompare([]byte(c.Value), []byte(r.PostFormValue("login_csrf"))) != 1 {
		d.Error = "The login form expired. Try again."
		s.renderLogin(w, r, http.StatusForbidden, d)
		return
	}
	token := strings.TrimSpace(r.PostFormValue("token"))
	if token == "" {
		d.Error = "Enter an operator token."
		s.renderLogin(w, r, http.StatusBadRequest, d)
		return
	}
	var me hubv1.OperatorToken
	err = s.api.call(r.Context(), token, "GET", "/v1/whoami", nil, nil, &me)
	switch status(err) {
	case http.StatusOK:
	case http.StatusUnauthorized:
		d.Error = "The hub does not know this token."
		s.renderLogin(w, r, http.StatusUnauthorized, d)
		return
	case http.StatusForbidden:
		d.Error = "This token's scope cannot use the UI: log in with a read or admin operator token."
		s.renderLogin(w, r, http.StatusForbidden, d)
		return
	default:
		d.Error = "The hub could not check the token: " + err.Error()
		s.renderLogin(w, r, http.StatusBadGateway, d)
		return
	}
	ss := session{Token: token, Name: me.Name, ID: randomID(), Admin: me.Scope == "admin", Expires: s.opts.Clock.Now().Add(s.opts.SessionTTL).Unix()}
	http.SetCookie(w, s.cookie(r, sessionCookie, s.seal.seal(ss), int(s.opts.SessionTTL/time.Second)))
	http.SetCookie(w, s.cookie(r, loginCookie, "", -1))
	http.Redirect(w, r, d.Next, http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, _ *session) error {
	s.clearSession(w, r)
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
	return nil
}

// safeNext keeps a post-login redirect inside the UI.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/ui/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") || strings.HasPrefix(next, "/ui/login") {
		return "/ui/fleet"
	}
	return next
}
