package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	hubv1 "github.com/misaki-io/misaki/api/hub/v1"
)

var keysCommands = []*command{
	{
		group: "keys", name: "rotate",
		summary: "Rotate the signing (targets) key or the root key",
		help: `Every vehicle then gets a revision signed with the new key; agents walk the
trust root chain to the new root version.`,
		run: keysRotate,
	},
}

var tokenCommands = []*command{
	{
		group: "token", name: "create", args: "<name>",
		summary: "Create an operator token (scope read or admin)",
		help: `In table output the secret is printed alone, so a script can capture it:
  TOKEN=$(misaki token create ci --scope read)
The hub keeps only a hash: this is the only time it is shown.`,
		run: tokenCreate,
	},
	{
		group: "token", name: "list", aliases: []string{"ls"},
		summary: "List operator tokens (without secrets)",
		run:     tokenList,
	},
	{
		group: "token", name: "delete", aliases: []string{"rm", "revoke"}, args: "<name>",
		summary: "Revoke an operator token (within 10 s on every replica)",
		run:     tokenDelete,
	},
}

var auditCommand = &command{
	name:    "audit",
	summary: "Show the audit log, newest first",
	run:     audit,
}

func keysRotate(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	role := fs.String("role", "targets", "the key to rotate: targets (signs desired state) or root")
	if _, err := e.parse(fs, args, 0, 0); err != nil {
		return err
	}
	if *role != "targets" && *role != "root" {
		return usagef("--role %s: want targets or root", *role)
	}
	c, err := e.hub()
	if err != nil {
		return err
	}
	var res struct {
		Role        string `json:"role"`
		RootVersion int64  `json:"rootVersion"`
	}
	if err := c.do(ctx, http.MethodPost, "/v1/keys/rotate", nil, map[string]string{"role": *role}, &res); err != nil {
		return err
	}
	return e.show(res, func(w io.Writer) error {
		_, err := fmt.Fprintf(w, "%s key rotated; trust root version %d\n", res.Role, res.RootVersion)
		return err
	})
}

// operatorToken is the API's operator token (internal/hub/api.OperatorToken).
type operatorToken struct {
	Name    string `json:"name"`
	Scope   string `json:"scope"`
	Created string `json:"created,omitempty"`
	Token   string `json:"token,omitempty"`
}

func tokenCreate(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	scope := fs.String("scope", "", "read (every GET) or admin (everything); required")
	pos, err := e.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if *scope != "read" && *scope != "admin" {
		return usagef("--scope: want read or admin")
	}
	c, err := e.hub()
	if err != nil {
		return err
	}
	var got operatorToken
	if err := c.do(ctx, http.MethodPost, "/v1/operator-tokens", nil, operatorToken{Name: pos[0], Scope: *scope}, &got); err != nil {
		return err
	}
	return e.show(got, func(w io.Writer) error {
		fmt.Fprintf(e.stderr, "operator token %s (scope %s) created; the secret is shown once:\n", got.Name, got.Scope)
		_, err := fmt.Fprintln(w, got.Token)
		return err
	})
}

func tokenList(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	if _, err := e.parse(fs, args, 0, 0); err != nil {
		return err
	}
	c, err := e.hub()
	if err != nil {
		return err
	}
	var l hubv1.List[operatorToken]
	if err := c.get(ctx, "/v1/operator-tokens", nil, &l); err != nil {
		return err
	}
	return e.show(l, func(w io.Writer) error {
		t := newTable("NAME", "SCOPE", "AGE")
		for _, tok := range l.Items {
			age := "<unknown>"
			if ts, err := time.Parse(time.RFC3339, tok.Created); err == nil {
				age = e.since(ts)
			}
			t.add(tok.Name, tok.Scope, age)
		}
		return e.listOrNone(w, t, "operator tokens")
	})
}

func tokenDelete(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	pos, err := e.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	c, err := e.hub()
	if err != nil {
		return err
	}
	if err := c.do(ctx, http.MethodDelete, "/v1/operator-tokens/"+pathEscape(pos[0]), nil, nil, nil); err != nil {
		return err
	}
	_, err = fmt.Fprintf(e.stdout, "operator-token/%s deleted\n", pos[0])
	return err
}

func audit(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	limit := fs.Int("limit", 50, "how many entries (newest first)")
	if _, err := e.parse(fs, args, 0, 0); err != nil {
		return err
	}
	if *limit < 1 {
		return usagef("--limit %d: want 1 or more", *limit)
	}
	c, err := e.hub()
	if err != nil {
		return err
	}
	l, err := listAll[hubv1.AuditEntry](ctx, c, "/v1/audit", nil, min(*limit, 1000), *limit)
	if err != nil {
		return err
	}
	return e.show(l, func(w io.Writer) error {
		t := newTable("TIME", "ACTOR", "ACTION", "OBJECT", "DETAIL")
		for _, a := range l.Items {
			t.add(a.Time.UTC().Format(time.RFC3339), a.Actor, a.Action, a.Object, orDash(a.Detail))
		}
		return e.listOrNone(w, t, "audit entries")
	})
}
