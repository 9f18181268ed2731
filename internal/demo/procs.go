package demo

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"
)

// proc is one child process of the demo, its output going to a log file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string        // path of the file that receives stdout and stderr
	done chan struct{} // closed once the process has exited and err is set
	err  error         // what Wait returned
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop asks the process to end with SIGTERM and kills it if it has not
// ended after grace. It returns Wait's error.
func (p *proc) stop(grace time.Duration) error {
	if p.exited() {
		return p.err
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.cmd.Process.Kill() // signals are not supported everywhere
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		p.cmd.Process.Kill()
		<-p.done
	}
	return p.err
}

// procs are the children started by one demo run.
type procs struct {
	dir string // where the log files go

	mu   sync.Mutex // guards list
	list []*proc
}

// start runs bin with args, stdout and stderr appended to DIR/NAME.log.
func (ps *procs) start(name, bin string, args ...string) (*proc, error) {
	path := filepath.Join(ps.dir, name+".log")
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: path, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	ps.mu.Lock()
	ps.list = append(ps.list, p)
	ps.mu.Unlock()
	return p, nil
}

// stopAll stops every child at once and returns the errors of those that
// did not end cleanly. Stopping them together keeps an interrupted demo
// quick: the proxy answers the app's held requests as it shuts down, so the
// app need not wait out the hold window.
func (ps *procs) stopAll(grace time.Duration) error {
	ps.mu.Lock()
	list := slices.Clone(ps.list)
	ps.mu.Unlock()
	errs := make([]error, len(list))
	var wg sync.WaitGroup
	for i, p := range list {
		wg.Go(func() {
			if err := p.stop(grace); err != nil && !isTermination(err) {
				errs[i] = fmt.Errorf("%s: %w (log %s)", p.name, err, p.log)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// isTermination reports whether err only says that the process ended by
// the signal stop sent it.
func isTermination(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && (ws.Signal() == syscall.SIGTERM || ws.Signal() == syscall.SIGKILL)
}
