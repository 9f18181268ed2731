// Package cli is the misaki command: the operator's client for the fleet
// hub's API (chart sources and charts, vehicles and their bootstrap
// tokens, deployments and previews, their generations and rollbacks,
// rollouts and their pause, resume and abort, the digital twin, keys,
// operator tokens and the audit log), with kubectl-like output (-o
// table|json|yaml); and misaki check, a pre-flight of the mesh in a
// Kubernetes cluster, which talks to the cluster's API server, not the hub.
//
// Run is the whole program; cmd/misaki only builds the context and exits
// with Run's status. docs/cli.md is the reference for people.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"time"
)

// Version is the CLI's version; release builds set it with
// -ldflags "-X github.com/misaki-io/misaki/internal/cli.Version=v1.2.3".
// Empty: the module version from the build info, else "devel".
var Version string

// Exit statuses.
const (
	exitOK    = 0
	exitError = 1 // the command failed (the hub refused, the hub was not reached, ...)
	exitUsage = 2 // the command line is wrong
)

// Run runs the misaki command with args (without the program name) and
// returns the process's exit status: 0 on success, 1 when the command
// failed, 2 when the command line is wrong.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	e := &env{
		stdin:  os.Stdin,
		stdout: stdout,
		stderr: stderr,
		getenv: os.Getenv,
		now:    time.Now,
	}
	return e.run(ctx, args)
}

// env is one invocation: where it reads and writes, the global flags, and
// the command being run.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	now            func() time.Time

	g   globals
	cmd *command
}

// globals are the flags every command takes.
type globals struct {
	hub, token, caFile, config string
	output                     string
	timeout                    time.Duration
}

// command is one runnable command, such as "vehicle token".
type command struct {
	group   string // "" for a top-level command
	name    string
	aliases []string
	args    string // positional arguments, as usage shows them
	summary string
	help    string // more text for -h: what it does, examples
	run     func(ctx context.Context, e *env, args []string) error
}

func (c *command) path() string {
	if c.group == "" {
		return c.name
	}
	return c.group + " " + c.name
}

func (c *command) usageLine() string {
	s := "misaki " + c.path()
	if c.args != "" {
		s += " " + c.args
	}
	return s + " [flags]"
}

// deleteNamed is the run of a command that deletes the object its one
// argument names: DELETE prefix+name, then "<kind>/<name> <done>".
func deleteNamed(prefix, kind, done string) func(context.Context, *env, []string) error {
	return func(ctx context.Context, e *env, args []string) error {
		pos, c, err := e.connect(e.flags(), args, 1, 1)
		if err != nil {
			return err
		}
		if err := c.do(ctx, http.MethodDelete, prefix+pathEscape(pos[0]), nil, nil, nil); err != nil {
			return err
		}
		_, err = fmt.Fprintf(e.stdout, "%s/%s %s\n", kind, pos[0], done)
		return err
	}
}

// group is a noun with subcommands.
type group struct {
	name    string
	aliases []string
	title   string
}

var groups = []group{
	{"repo", []string{"repos", "source", "sources"}, "Chart sources"},
	{"chart", []string{"charts"}, "Charts"},
	{"vehicle", []string{"vehicles"}, "Vehicles"},
	{"deploy", []string{"deployment", "deployments", "deploys"}, "Deployments"},
	{"rollout", []string{"rollouts"}, "Rollouts"},
	{"keys", []string{"key"}, "Signing keys"},
	{"token", []string{"tokens"}, "Operator tokens"},
}

// commands is every command, in the order help lists them.
var commands []*command

func init() {
	commands = slices.Concat(repoCommands, chartCommands, vehicleCommands, deployCommands, rolloutCommands,
		[]*command{twinCommand}, keysCommands, tokenCommands,
		[]*command{auditCommand, checkCommand, versionCommand})
}

// usageError is a command line that is wrong; Run prints it with the
// command's usage line and exits 2.
type usageError struct{ msg string }

func (u *usageError) Error() string { return u.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

func (e *env) run(ctx context.Context, args []string) int {
	// Global flags may come before the command words.
	gfs := flag.NewFlagSet("misaki", flag.ContinueOnError)
	gfs.SetOutput(io.Discard)
	e.globalFlags(gfs)
	if err := gfs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			e.usage(e.stdout)
			return exitOK
		}
		fmt.Fprintf(e.stderr, "error: %v\n\n", err)
		e.usage(e.stderr)
		return exitUsage
	}
	args = gfs.Args()
	if len(args) == 0 {
		e.usage(e.stderr)
		return exitUsage
	}
	if args[0] == "help" {
		return e.help(ctx, args[1:])
	}
	cmd, rest, err := lookup(args)
	if err != nil {
		fmt.Fprintf(e.stderr, "error: %v\n", err)
		return exitUsage
	}
	if cmd == nil { // a group alone, or with -h
		g := findGroup(args[0])
		w, code := e.stderr, exitUsage
		if len(rest) > 0 && (rest[0] == "-h" || rest[0] == "--help" || rest[0] == "help") {
			w, code = e.stdout, exitOK
		}
		e.groupUsage(w, g)
		return code
	}
	e.cmd = cmd
	err = cmd.run(ctx, e, rest)
	return e.report(err)
}

// report prints err the way the user should see it and returns the exit
// status.
func (e *env) report(err error) int {
	if err == nil {
		return exitOK
	}
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(e.stderr, "error: %s\nUsage: %s\nRun 'misaki %s -h' for help.\n", ue.msg, e.cmd.usageLine(), e.cmd.path())
		return exitUsage
	}
	fmt.Fprintf(e.stderr, "error: %s\n", describe(err))
	return exitError
}

// lookup finds the command args name. A group word without a known
// subcommand answers a nil command (the group's usage is printed).
func lookup(args []string) (*command, []string, error) {
	word := args[0]
	if strings.HasPrefix(word, "-") {
		return nil, nil, fmt.Errorf("flag %s before a command: global flags are %s", word, strings.Join(globalFlagNames, ", "))
	}
	for _, c := range commands {
		if c.group == "" && (c.name == word || slices.Contains(c.aliases, word)) {
			return c, args[1:], nil
		}
	}
	g := findGroup(word)
	if g == nil {
		return nil, nil, fmt.Errorf("unknown command %q (misaki help lists the commands)", word)
	}
	if len(args) < 2 || strings.HasPrefix(args[1], "-") || args[1] == "help" {
		return nil, args[1:], nil
	}
	for _, c := range commands {
		if c.group == g.name && (c.name == args[1] || slices.Contains(c.aliases, args[1])) {
			return c, args[2:], nil
		}
	}
	return nil, nil, fmt.Errorf("unknown command %q %q (misaki %s -h lists its commands)", g.name, args[1], g.name)
}

func findGroup(word string) *group {
	for i := range groups {
		if groups[i].name == word || slices.Contains(groups[i].aliases, word) {
			return &groups[i]
		}
	}
	return nil
}

// help runs "misaki help [command...]".
func (e *env) help(ctx context.Context, args []string) int {
	if len(args) == 0 {
		e.usage(e.stdout)
		return exitOK
	}
	cmd, _, err := lookup(args)
	if err != nil {
		fmt.Fprintf(e.stderr, "error: %v\n", err)
		return exitUsage
	}
	if cmd == nil {
		e.groupUsage(e.stdout, findGroup(args[0]))
		return exitOK
	}
	e.cmd = cmd
	return e.report(cmd.run(ctx, e, []string{"-h"}))
}

// usage prints the command list.
func (e *env) usage(w io.Writer) {
	fmt.Fprint(w, `misaki is the operator CLI of Misaki's fleet hub.

Usage:
  misaki <command> [arguments] [flags]
`)
	for _, g := range groups {
		fmt.Fprintf(w, "\n%s:\n", g.title)
		listCommands(w, g.name)
	}
	fmt.Fprint(w, "\nThe twin, audit and more:\n")
	listCommands(w, "")
	fmt.Fprint(w, "\n")
	printGlobalFlags(w)
	fmt.Fprint(w, "\nRun 'misaki <command> -h' (or 'misaki help <command>') for a command's flags.\n")
}

func (e *env) groupUsage(w io.Writer, g *group) {
	fmt.Fprintf(w, "%s.\n\nCommands:\n", g.title)
	listCommands(w, g.name)
	fmt.Fprintf(w, "\nRun 'misaki %s <command> -h' for a command's flags.\n", g.name)
}

var versionCommand = &command{
	name:    "version",
	summary: "Print the CLI's version",
	run: func(ctx context.Context, e *env, args []string) error {
		fs := e.flags()
		if _, err := e.parse(fs, args, 0, 0); err != nil {
			return err
		}
		v := struct {
			Version string `json:"version"`
			Go      string `json:"go"`
			OS      string `json:"os"`
			Arch    string `json:"arch"`
		}{version(), runtime.Version(), runtime.GOOS, runtime.GOARCH}
		return e.showLine(v, "misaki %s (%s, %s/%s)", v.Version, v.Go, v.OS, v.Arch)
	},
}

func version() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

func listCommands(w io.Writer, group string) {
	for _, c := range commands {
		if c.group == group {
			line := strings.TrimSuffix(strings.TrimPrefix(c.usageLine(), "misaki "), " [flags]")
			fmt.Fprintf(w, "  %-42s %s\n", line, c.summary)
		}
	}
}
