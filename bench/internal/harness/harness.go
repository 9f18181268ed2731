// Package harness is what the benchmark programs that run the project's
// binaries as processes and measure them (bench/gatewaybench,
// bench/hubbench) share: the program's shape (Program: flags parsed, the
// configurations run, a Markdown table printed; its main and its smoke
// test), a PostgreSQL server set for measurement, the CPU and memory of
// processes and the machine's load from /proc, and percentiles.
package harness

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/misaki-io/misaki/internal/pgtest"
)

// Program is a benchmark program: O its options, R its report.
type Program[O, R any] struct {
	// Name begins its errors ("gatewaybench: ...").
	Name string
	// Parse reads the flags, writing usage to stderr.
	Parse func(args []string, stderr io.Writer) (O, error)
	// Bench runs the configurations, writing progress to log. It returns
	// what it measured even with an error, for Print.
	Bench func(ctx context.Context, o O, log io.Writer) (R, error)
	// Print writes the report, a Markdown table.
	Print func(w io.Writer, o O, rep R)
}

// Run parses args, runs the benchmark with progress on stderr, and prints
// its report on stdout, also after an error.
func (p Program[O, R]) Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := p.Parse(args, stderr)
	if err != nil {
		return err
	}
	rep, err := p.Bench(ctx, o, stderr)
	p.Print(stdout, o, rep)
	return err
}

// Main runs the program with the command line until SIGINT or SIGTERM,
// and exits 1 after an error (0 after -h).
func (p Program[O, R]) Main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := p.Run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, p.Name+":", err)
		os.Exit(1)
	}
}

// TB is the part of testing.TB that Test and HavePostgres use.
type TB interface {
	Helper()
	Context() context.Context
	Log(args ...any)
	Fatal(args ...any)
}

// Test runs the program with args in a test: progress and the report go
// to t's log, and an error ends the test.
func (p Program[O, R]) Test(t TB, args []string) R {
	t.Helper()
	o, err := p.Parse(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := p.Bench(t.Context(), o, logWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	p.Print(&out, o, rep)
	t.Log(out.String())
	return rep
}

// logWriter sends the benchmark's progress lines to t.Log.
type logWriter struct{ t TB }

func (w logWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// HavePostgres reports whether PostgreSQL's server binaries are installed
// (pgtest.BinDir), for a smoke test to add the configurations that need
// them. In CI (CI set) they must be: without them t fails.
func HavePostgres(t TB) bool {
	t.Helper()
	switch {
	case pgtest.BinDir() != "":
		return true
	case os.Getenv("CI") != "":
		t.Fatal("no PostgreSQL server under /usr/lib/postgresql; .ci/run installs the postgresql package")
	}
	return false
}

// Percentile is the p-th percentile of sorted ds (nearest rank); 0 when
// ds is empty.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	i := int(float64(len(ds))*p/100+0.5) - 1
	return ds[max(0, min(i, len(ds)-1))]
}

// Parse parses args with fs and refuses arguments left after the flags.
func Parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

// Configs splits the -configs flag's comma-separated list of
// configurations, in order, and checks each name with check.
func Configs(list string, check func(name string) error) ([]string, error) {
	var out []string
	for _, c := range strings.Split(list, ",") {
		c = strings.TrimSpace(c)
		if err := check(c); err != nil {
			return nil, fmt.Errorf("-configs: %w", err)
		}
		out = append(out, c)
	}
	return out, nil
}
