package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Flags are the standard library's, one FlagSet per command, parsed so
// that flags and arguments may be mixed as with kubectl ("misaki repo add
// charts https://... --type http"); "--" ends the flags.

// shorthands are one-letter flags that stand for a long one.
var shorthands = map[string]string{"o": "output", "l": "selector", "f": "values", "n": "namespace"}

var globalFlagNames = []string{"--hub", "--token", "--ca-file", "--config", "--request-timeout", "-o/--output"}

// globalFlags registers the flags every command takes on fs. Their
// defaults are the values already parsed, so flags given before the
// command words are kept.
func (e *env) globalFlags(fs *flag.FlagSet) {
	if e.g.timeout == 0 {
		e.g.timeout = 60 * time.Second
	}
	if e.g.output == "" {
		e.g.output = "table"
	}
	fs.StringVar(&e.g.hub, "hub", e.g.hub, "the hub's `URL`, such as https://hub.example.com:8443 (overrides the config file)")
	fs.StringVar(&e.g.token, "token", e.g.token, "an operator token (overrides the config file)")
	fs.StringVar(&e.g.caFile, "ca-file", e.g.caFile, "PEM `file` of the CA that signed the hub's certificate (overrides the config file)")
	fs.StringVar(&e.g.config, "config", e.g.config, "the config `file` (default $MISAKI_CONFIG, else ~/.config/misaki/config.yaml)")
	fs.DurationVar(&e.g.timeout, "request-timeout", e.g.timeout, "how long one request may take: to the hub, or for check to the Kubernetes API server")
	fs.StringVar(&e.g.output, "output", e.g.output, "output `format`: table, json or yaml")
	fs.StringVar(&e.g.output, "o", e.g.output, "")
}

func isGlobal(name string) bool {
	switch name {
	case "hub", "token", "ca-file", "config", "request-timeout", "output", "o":
		return true
	}
	return false
}

func printGlobalFlags(w io.Writer) {
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	(&env{}).globalFlags(fs)
	fmt.Fprintln(w, "Global flags (any command, before or after its words):")
	printFlags(w, fs, isGlobal)
}

// flags makes the FlagSet of the command being run, with the global
// flags and a usage message built from the command's description.
func (e *env) flags() *flag.FlagSet {
	c := e.cmd
	fs := flag.NewFlagSet("misaki "+c.path(), flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported once, by Run
	e.globalFlags(fs)
	// The flag package calls Usage on every error; the usage is printed
	// only for -h (parse does it).
	fs.Usage = func() {}
	return fs
}

// printUsage prints the usage of the command being run, with fs's flags.
func (e *env) printUsage(fs *flag.FlagSet) {
	c := e.cmd
	{
		w := e.stdout
		fmt.Fprintf(w, "%s.\n\nUsage:\n  %s\n", c.summary, c.usageLine())
		if c.help != "" {
			fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(c.help))
		}
		own := false
		fs.VisitAll(func(f *flag.Flag) { own = own || !isGlobal(f.Name) })
		if own {
			fmt.Fprint(w, "\nFlags:\n")
			printFlags(w, fs, func(name string) bool { return !isGlobal(name) })
		}
		fmt.Fprint(w, "\n")
		printGlobalFlags(w)
	}
}

// printFlags prints the flags of fs that keep accepts, kubectl style
// ("-o, --output format   what it does"), in aligned columns.
func printFlags(w io.Writer, fs *flag.FlagSet, keep func(string) bool) {
	long := map[string]string{}
	for s, l := range shorthands {
		long[l] = s
	}
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fs.VisitAll(func(f *flag.Flag) {
		if !keep(f.Name) || shorthands[f.Name] != "" && fs.Lookup(shorthands[f.Name]) != nil {
			return
		}
		name := "      --" + f.Name
		if s, ok := long[f.Name]; ok && fs.Lookup(s) != nil {
			name = "  -" + s + ", --" + f.Name
		}
		typ, usage := flag.UnquoteUsage(f)
		if typ != "" {
			name += " " + typ
		}
		switch f.DefValue {
		case "", "false", "0", "0s":
		default:
			usage += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(tw, "%s\t%s\n", name, usage)
	})
	tw.Flush()
}

// parse parses args with fs, letting flags and arguments mix, and checks
// that between min and max arguments remain (max < 0: no limit). It
// answers the arguments.
func (e *env) parse(fs *flag.FlagSet, args []string, min, max int) ([]string, error) {
	var pos, tail []string
	if i := slices.Index(args, "--"); i >= 0 {
		args, tail = args[:i], args[i+1:]
	}
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				e.printUsage(fs)
				return nil, err
			}
			msg := err.Error()
			if f, ok := strings.CutPrefix(msg, "flag provided but not defined: "); ok {
				msg = "unknown flag " + f
			}
			return nil, usagef("%s", msg)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	pos = append(pos, tail...)
	switch e.g.output {
	case "table", "json", "yaml":
	case "wide", "":
		e.g.output = "table"
	default:
		return nil, usagef("-o %s: want table, json or yaml", e.g.output)
	}
	switch {
	case len(pos) < min:
		return nil, usagef("%s: want %s", tooFew(min, len(pos)), e.cmd.args)
	case max >= 0 && len(pos) > max:
		return nil, usagef("unexpected argument %q", pos[max])
	}
	return pos, nil
}

func tooFew(want, got int) string {
	if got == 0 {
		return "missing arguments"
	}
	return fmt.Sprintf("%d argument(s) given, %d needed", got, want)
}

// multiString is a flag that may be given many times.
type multiString []string

func (m *multiString) String() string     { return strings.Join(*m, ",") }
func (m *multiString) Set(v string) error { *m = append(*m, v); return nil }

// given reports whether fs's command line set the flag name (or its
// shorthand).
func given(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name || shorthands[f.Name] == name {
			set = true
		}
	})
	return set
}

// keyValues parses "k=v" items, each possibly a comma-separated list
// ("cpu=2,memory=4Gi"), as --label and --allocatable take them.
func keyValues(flagName string, items []string) (map[string]string, error) {
	out := map[string]string{}
	for _, item := range items {
		for _, kv := range strings.Split(item, ",") {
			kv = strings.TrimSpace(kv)
			if kv == "" {
				continue
			}
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return nil, usagef("--%s %q: want key=value", flagName, kv)
			}
			out[k] = v
		}
	}
	return out, nil
}
