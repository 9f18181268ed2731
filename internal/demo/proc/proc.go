// Package proc runs the demos' child processes: each with its output in a
// log file, tied to the demo's life on Linux (the kernel sends it SIGTERM
// when the demo dies, even by SIGKILL), and stopped together, SIGTERM
// first and SIGKILL after a grace period.
package proc

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

// Proc is one child process, its output going to a log file.
type Proc struct {
	Name string
	Log  string // path of the file that receives stdout and stderr

	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and err is set
	err  error         // what Wait returned
}

// Done is closed once the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is what Wait returned; valid once Done is closed.
func (p *Proc) Err() error { return p.err }

// Pid is the process ID.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Kill kills the process with SIGKILL, as a crash or power loss would, and
// waits until it is gone.
func (p *Proc) Kill() error {
	if err := p.cmd.Process.Kill(); err != nil && !p.Exited() {
		return fmt.Errorf("kill %s: %w", p.Name, err)
	}
	<-p.done
	return nil
}

// Stop asks the process to end with SIGTERM and kills it if it has not
// ended after grace. It returns Wait's error.
func (p *Proc) Stop(grace time.Duration) error {
	if p.Exited() {
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

// Group is the children started by one demo run. The zero value is not
// usable: set Dir.
type Group struct {
	Dir string // where the log files go

	mu   sync.Mutex // guards list
	list []*Proc
}

// Start runs bin with args, stdout and stderr going to Dir/NAME.log.
func (g *Group) Start(name, bin string, args ...string) (*Proc, error) {
	return g.StartCmd(name, exec.Command(bin, args...))
}

// StartCmd starts cmd (its Dir, Env and SysProcAttr as the caller set
// them; a nil SysProcAttr gets the one that ties the child to the demo),
// stdout and stderr going to Dir/NAME.log.
func (g *Group) StartCmd(name string, cmd *exec.Cmd) (*Proc, error) {
	path := filepath.Join(g.Dir, name+".log")
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = SysProcAttr()
	}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, cmd: cmd, Log: path, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	g.mu.Lock()
	g.list = append(g.list, p)
	g.mu.Unlock()
	return p, nil
}

// StopAll stops every child at once and returns the errors of those that
// did not end cleanly. Stopping them together keeps an interrupted demo
// quick: a proxy answers the app's held requests as it shuts down, so the
// app need not wait out the hold window.
func (g *Group) StopAll(grace time.Duration) error {
	g.mu.Lock()
	list := slices.Clone(g.list)
	g.mu.Unlock()
	errs := make([]error, len(list))
	var wg sync.WaitGroup
	for i, p := range list {
		wg.Go(func() {
			if err := p.Stop(grace); err != nil && !IsTermination(err) {
				errs[i] = fmt.Errorf("%s: %w (log %s)", p.Name, err, p.Log)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// IsTermination reports whether err only says that the process ended by
// a SIGTERM or SIGKILL (the ones Stop sends).
func IsTermination(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && (ws.Signal() == syscall.SIGTERM || ws.Signal() == syscall.SIGKILL)
}

// Exited is the error for a child that ended when it should not have.
func Exited(p *Proc) error {
	return fmt.Errorf("%s exited unexpectedly (%v); see %s", p.Name, p.err, p.Log)
}
