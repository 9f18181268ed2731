//go:build linux

package agentbench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// mem is one reading of /proc/<pid>/status, in bytes.
type mem struct {
	RSS, HWM, Anon, File int64 // VmRSS, VmHWM, RssAnon, RssFile
}

func readMem(pid int) (mem, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return mem{}, err
	}
	var m mem
	for l := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v) // "12345 kB"
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmRSS":
			m.RSS = n << 10
		case "VmHWM":
			m.HWM = n << 10
		case "RssAnon":
			m.Anon = n << 10
		case "RssFile":
			m.File = n << 10
		}
	}
	return m, nil
}

// resetHWM sets VmHWM back to the current RSS (proc(5), clear_refs 5),
// so a later VmHWM is the peak since now.
func resetHWM(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// cpuTime is the process's utime+stime from /proc/<pid>/stat.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseInt(f[11], 10, 64)
	k, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+k) * time.Second / 100, nil // USER_HZ is 100 on Linux
}

// logLine is one JSON log line of a process, with when it was read.
type logLine struct {
	At     time.Time
	Msg    string
	Fields map[string]any
	Raw    string
}

// process is a long-running component under measurement: its pid and its
// JSON log (slog's and zap's both name the message "msg").
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}

	mu    sync.Mutex // guards lines
	lines []logLine
}

func startProcess(name string, env []string, bin string, args ...string) (*process, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	r, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = cmd.Stderr // zap may log to stdout; both go to the pipe
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, done: make(chan struct{})}
	go p.read(r)
	return p, nil
}

func (p *process) read(r io.Reader) {
	defer close(p.done)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 4<<20)
	for sc.Scan() {
		l := logLine{At: time.Now(), Raw: sc.Text()}
		if json.Unmarshal(sc.Bytes(), &l.Fields) == nil {
			l.Msg, _ = l.Fields["msg"].(string)
		}
		p.mu.Lock()
		p.lines = append(p.lines, l)
		p.mu.Unlock()
	}
	p.cmd.Wait()
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// waitLog waits for the first line at or after since whose msg is msg and
// that ok accepts (nil: any).
func (p *process) waitLog(ctx context.Context, since time.Time, msg string, ok func(logLine) bool) (logLine, error) {
	for i := 0; ; {
		p.mu.Lock()
		for ; i < len(p.lines); i++ {
			l := p.lines[i]
			if !l.At.Before(since) && l.Msg == msg && (ok == nil || ok(l)) {
				p.mu.Unlock()
				return l, nil
			}
		}
		p.mu.Unlock()
		select {
		case <-p.done:
			return logLine{}, fmt.Errorf("%s exited before logging %q:\n%s", p.name, msg, p.tail())
		case <-ctx.Done():
			return logLine{}, fmt.Errorf("%s: no %q in its log: %w\n%s", p.name, msg, ctx.Err(), p.tail())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// tail is the last lines of the log, for failures.
func (p *process) tail() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	for _, l := range p.lines[max(0, len(p.lines)-15):] {
		raw := l.Raw
		if len(raw) > 600 {
			raw = raw[:600] + "..."
		}
		b.WriteString(raw + "\n")
	}
	return b.String()
}

// stop sends SIGTERM, then SIGKILL after 10 s.
func (p *process) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// idle is a process's settled state: RSS at the start of a window, its
// CPU over the window, and RSS at its end.
type idle struct {
	Start, End mem
	CPU        time.Duration
	Window     time.Duration
}

func (i idle) percent() float64 { return 100 * i.CPU.Seconds() / i.Window.Seconds() }

// measureIdle waits settle, then reads the process over window.
func measureIdle(ctx context.Context, pid int, settle, window time.Duration) (idle, error) {
	if err := sleep(ctx, settle); err != nil {
		return idle{}, err
	}
	var r idle
	var err error
	if r.Start, err = readMem(pid); err != nil {
		return r, err
	}
	c0, err := cpuTime(pid)
	if err != nil {
		return r, err
	}
	t0 := time.Now()
	if err := sleep(ctx, window); err != nil {
		return r, err
	}
	c1, err := cpuTime(pid)
	if err != nil {
		return r, err
	}
	r.CPU, r.Window = c1-c0, time.Since(t0)
	r.End, err = readMem(pid)
	return r, err
}

// burst is a process's cost over some work.
type burst struct {
	Applied, Ready time.Duration // from the start of the work
	Peak           int64         // VmHWM (reset at the start) or maxrss
	CPU            time.Duration
	After          mem // right after the work
}

// watch is a burst under way.
type watch struct {
	pid   int
	start time.Time
	cpu0  time.Duration
}

func startWatch(pid int) (*watch, error) {
	if err := resetHWM(pid); err != nil {
		return nil, err
	}
	c, err := cpuTime(pid)
	return &watch{pid: pid, start: time.Now(), cpu0: c}, err
}

func (w *watch) end() (burst, error) {
	c, err := cpuTime(w.pid)
	if err != nil {
		return burst{}, err
	}
	m, err := readMem(w.pid)
	return burst{Ready: time.Since(w.start), CPU: c - w.cpu0, Peak: m.HWM, After: m}, err
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
