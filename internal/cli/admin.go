package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
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
	{
		group: "keys", name: "root", args: "[version]",
		summary: "Print a trust root (TUF root.json): the newest, or version N",
		help: `An agent is installed with the root it pins (misaki-agent --root-file, the
agent chart's trust.root): keep the file this prints, from a hub you trust.
  misaki keys root 1 > root.json`,
		run: keysRoot,
	},
}

var tokenCommands = []*command{
	{
		group: "token", name: "create", args: "<name>",
		summary: "Create an operator token (scope read, admin or cloud-agent)",
		help: `A read token makes every read; an admin token everything. A cloud-agent
token is the cloud agent's (misaki-agent --cloud): it reads any vehicle's
cloud half and follows the change feed (GET /v1/changes), reports on cloud
halves, and nothing else.

In table output the secret is printed alone, so a script can capture it:
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
		run:     deleteNamed("/v1/operator-tokens/", "operator-token", "deleted"),
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
	var res hubv1.RotateResult
	if err := c.do(ctx, http.MethodPost, "/v1/keys/rotate", nil, hubv1.RotateRequest{Role: *role}, &res); err != nil {
		return err
	}
	return e.showLine(res, "%s key rotated; trust root version %d", res.Role, res.RootVersion)
}

func keysRoot(ctx context.Context, e *env, args []string) error {
	pos, c, err := e.connect(e.flags(), args, 0, 1)
	if err != nil {
		return err
	}
	path := "/v1/trust/root"
	if len(pos) == 1 {
		n, err := strconv.ParseInt(pos[0], 10, 64)
		if err != nil || n < 1 {
			return usagef("version %q: want a number from 1", pos[0])
		}
		path += "/" + strconv.FormatInt(n, 10) + ".json"
	}
	var root json.RawMessage
	if err := c.do(ctx, http.MethodGet, path, nil, nil, &root); err != nil {
		return err
	}
	_, err = e.stdout.Write(append(root, '\n'))
	return err
}

func tokenCreate(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	scope := fs.String("scope", "", "read (every GET), admin (everything) or cloud-agent (vehicles' cloud halves and the change feed); required")
	pos, err := e.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	switch *scope {
	case "read", "admin", "cloud-agent":
	default:
		return usagef("--scope: want read, admin or cloud-agent")
	}
	c, err := e.hub()
	if err != nil {
		return err
	}
	var got hubv1.OperatorToken
	if err := c.do(ctx, http.MethodPost, "/v1/operator-tokens", nil, hubv1.OperatorToken{Name: pos[0], Scope: *scope}, &got); err != nil {
		return err
	}
	return e.showSecret(got, fmt.Sprintf("operator token %s (scope %s) created; the secret is shown once:", got.Name, got.Scope), got.Token)
}

func tokenList(ctx context.Context, e *env, args []string) error {
	_, c, err := e.connect(e.flags(), args, 0, 0)
	if err != nil {
		return err
	}
	var l hubv1.List[hubv1.OperatorToken]
	if err := c.get(ctx, "/v1/operator-tokens", nil, &l); err != nil {
		return err
	}
	return showList(e, l, "operator tokens", []string{"NAME", "SCOPE", "AGE"},
		func(tok hubv1.OperatorToken) []string { return []string{tok.Name, tok.Scope, e.since(tok.Created)} })
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
	return showList(e, l, "audit entries", []string{"TIME", "ACTOR", "ACTION", "OBJECT", "DETAIL"},
		func(a hubv1.AuditEntry) []string {
			return []string{a.Time.UTC().Format(time.RFC3339), a.Actor, a.Action, a.Object, orDash(a.Detail)}
		})
}
