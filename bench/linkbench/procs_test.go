//go:build linux

package linkbench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// build builds misaki-proxy and misaki-linkd as `make build` does.
func build(b *testing.B) (proxy, linkd string) {
	b.Helper()
	dir := b.TempDir()
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", dir+"/",
		"github.com/misaki-io/misaki/cmd/misaki-proxy", "github.com/misaki-io/misaki/cmd/misaki-linkd")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	return filepath.Join(dir, "misaki-proxy"), filepath.Join(dir, "misaki-linkd")
}

// proc is a process started in a namespace, its stderr read line by line.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}

	mu   sync.Mutex // guards tail
	tail []string   // the last lines, for failures
}

// start runs bin with args inside the namespace ns (ip netns exec execs
// it: the pid is bin's) and hands each stderr line to line.
func start(b *testing.B, ns, bin string, args []string, line func([]byte)) *proc {
	b.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, bin}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			l := sc.Bytes()
			line(l)
			p.mu.Lock()
			if len(p.tail) == 20 {
				p.tail = p.tail[1:]
			}
			p.tail = append(p.tail, string(l))
			p.mu.Unlock()
		}
		io.Copy(io.Discard, stderr)
		cmd.Wait()
	}()
	return p
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) logTail() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.tail, "\n")
}

// stop interrupts every process and waits for them, killing those that
// have not ended after 15 s.
func stop(ps []*proc) {
	for _, p := range ps {
		p.cmd.Process.Signal(os.Interrupt)
	}
	deadline := time.After(15 * time.Second)
	for _, p := range ps {
		select {
		case <-p.done:
		case <-deadline:
			p.cmd.Process.Kill()
			<-p.done
		}
	}
}

// wifiLine parses a JSON log line about link wifi with message msg: the
// proxy's "link state" or the agent's "link".
func wifiLine(l []byte, msg string) (at time.Time, up, ok bool) {
	if !bytes.Contains(l, []byte(`"msg":"`+msg+`"`)) || !bytes.Contains(l, []byte(`"link":"wifi"`)) {
		return time.Time{}, false, false
	}
	var rec struct {
		Time time.Time `json:"time"`
		Msg  string    `json:"msg"`
		Link string    `json:"link"`
		Up   *bool     `json:"up"`
	}
	if json.Unmarshal(l, &rec) != nil || rec.Msg != msg || rec.Link != "wifi" || rec.Up == nil {
		return time.Time{}, false, false
	}
	return rec.Time, *rec.Up, true
}

// startProxies starts n misaki-proxy processes, proxy i in namespace
// ns(i) with config cfg(i), and notes their "link state" lines for wifi.
func startProxies(b *testing.B, bin string, n int, ns func(int) string, cfg func(int) string, o *observer) []*proc {
	b.Helper()
	dir := b.TempDir()
	var ps []*proc
	for i := range n {
		path := filepath.Join(dir, fmt.Sprintf("proxy%d.yaml", i))
		if err := os.WriteFile(path, []byte(cfg(i)), 0o600); err != nil {
			b.Fatal(err)
		}
		ps = append(ps, start(b, ns(i), bin, []string{"--config", path}, func(l []byte) {
			if at, up, ok := wifiLine(l, "link state"); ok {
				o.note(i, up, at)
			}
		}))
	}
	return ps
}

// cpuTime is a process's user plus system CPU time.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	u, _ := strconv.Atoi(f[11])
	s, _ := strconv.Atoi(f[12])
	return time.Duration(u+s) * time.Second / 100 // USER_HZ
}

func cpuTimes(ps []*proc) time.Duration {
	var t time.Duration
	for _, p := range ps {
		t += cpuTime(p.pid())
	}
	return t
}

// selfCPU is this process's CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rssSum is the processes' resident memory, in MiB.
func rssSum(ps []*proc) float64 {
	var kb int64
	for _, p := range ps {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid()))
		if err != nil {
			continue
		}
		for l := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
				n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				kb += n
			}
		}
	}
	return float64(kb) / 1024
}

// machineBusy is the CPU time every process of the machine has used
// (user, nice, system, irq, softirq and steal from /proc/stat), to tell
// how much of a side's time others took.
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system irq softirq steal
		if i < len(f) {
			n, _ := strconv.ParseInt(f[i], 10, 64)
			ticks += n
		}
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}
