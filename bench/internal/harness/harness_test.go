package harness

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(n ...int) []time.Duration {
		var out []time.Duration
		for _, x := range n {
			out = append(out, time.Duration(x)*time.Millisecond)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		ds   []time.Duration
		p    float64
		want time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one", ms(7), 99, 7 * time.Millisecond},
		{"p50 of 4", ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"p99 of 4", ms(1, 2, 3, 4), 99, 4 * time.Millisecond},
		{"max", ms(1, 2, 3, 4), 100, 4 * time.Millisecond},
		{"p0 is the least", ms(1, 2, 3, 4), 0, 1 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Percentile(tc.ds, tc.p); got != tc.want {
				t.Errorf("Percentile(%v, %v) = %v, want %v", tc.ds, tc.p, got, tc.want)
			}
		})
	}
}

func TestProc(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Skip(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if kids := Children(os.Getpid()); !slices.Contains(kids, cmd.Process.Pid) {
		t.Errorf("Children = %v, want %d among them", kids, cmd.Process.Pid)
	}
	if cpu, err := CPUSeconds(os.Getpid()); err != nil || cpu < 0 {
		t.Errorf("CPUSeconds: %v %v", cpu, err)
	}
	if hwm, rss, err := Memory(os.Getpid()); err != nil || rss <= 0 || hwm < rss {
		t.Errorf("Memory: VmHWM %d VmRSS %d %v", hwm, rss, err)
	}
	if _, err := CPUSeconds(-1); err == nil {
		t.Error("CPUSeconds of no process: no error")
	}
	if PostgresCPU(nil) != -1 {
		t.Error("PostgresCPU without a server is not -1")
	}
	for n := 1; n <= 3; n++ {
		if got := strings.Fields(LoadAvg(n)); len(got) != n {
			t.Errorf("LoadAvg(%d) = %q", n, got)
		}
	}
	if LoadAvg(9) != "?" {
		t.Error("LoadAvg(9) is not ?")
	}
}

// The report is printed after a failed run too; a parse error ends it
// before anything runs.
func TestProgramRun(t *testing.T) {
	var ran []string
	boom := errors.New("boom")
	p := Program[string, string]{
		Name: "x",
		Parse: func(args []string, _ io.Writer) (string, error) {
			if len(args) > 0 {
				return "", errors.New("bad flag")
			}
			return "opts", nil
		},
		Bench: func(_ context.Context, o string, log io.Writer) (string, error) {
			io.WriteString(log, "progress\n")
			ran = append(ran, "bench "+o)
			return "partial", boom
		},
		Print: func(w io.Writer, o, rep string) { io.WriteString(w, o+" "+rep) },
	}
	var out, errw strings.Builder
	if err := p.Run(t.Context(), nil, &out, &errw); err != boom {
		t.Errorf("Run: %v, want boom", err)
	}
	if out.String() != "opts partial" || errw.String() != "progress\n" {
		t.Errorf("stdout %q, stderr %q", out.String(), errw.String())
	}
	if err := p.Run(t.Context(), []string{"-x"}, &out, &errw); err == nil || len(ran) != 1 {
		t.Errorf("a parse error: %v, %d runs", err, len(ran))
	}
}

func TestParseAndConfigs(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	list := fs.String("configs", "a,b", "")
	if err := Parse(fs, []string{"-configs", " b , a"}); err != nil {
		t.Fatal(err)
	}
	known := func(c string) error {
		if c != "a" && c != "b" {
			return fmt.Errorf("unknown configuration %q", c)
		}
		return nil
	}
	if got, err := Configs(*list, known); err != nil || !slices.Equal(got, []string{"b", "a"}) {
		t.Errorf("Configs(%q) = %q, %v", *list, got, err)
	}
	if _, err := Configs("a,c", known); err == nil || err.Error() != `-configs: unknown configuration "c"` {
		t.Errorf("an unknown configuration: %v", err)
	}
	if err := Parse(fs, []string{"extra"}); err == nil || !strings.Contains(err.Error(), `unexpected argument "extra"`) {
		t.Errorf("an argument after the flags: %v", err)
	}
	if err := Parse(fs, []string{"-nope"}); err == nil {
		t.Error("an unknown flag parsed")
	}
}
