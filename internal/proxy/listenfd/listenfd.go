// Package listenfd hands listening sockets from a parent process to the
// proxy: the supervisor (internal/proxy/supervise) binds the proxy's sockets
// once and hands them to every proxy it starts, and systemd socket activation
// hands them to the supervisor or to the proxy itself.
//
// The protocol is systemd's (sd_listen_fds(3)): the sockets are file
// descriptors 3, 4, … of the new process, LISTEN_FDS says how many there
// are, and LISTEN_FDNAMES names them, colon-separated, in order. Several
// sockets may share a name (the DNS socket is a UDP and a TCP socket, as one
// systemd .socket unit with ListenDatagram= and ListenStream= gives them);
// which is which is read from the socket (SO_TYPE).
//
// systemd sets LISTEN_PID to the process the sockets are meant for, so a
// grandchild that inherits the environment does not take them. A parent
// using os/exec cannot know its child's pid before the child runs, so the
// supervisor sets MISAKI_LISTEN_PARENT to its own pid instead, and the
// child takes the sockets only if that is its parent. Either way the
// variables are unset once read, as sd_listen_fds(1) does.
package listenfd

import (
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// The names of the proxy's sockets, in LISTEN_FDNAMES (and in a systemd
// .socket unit's FileDescriptorName=).
const (
	Mesh   = "mesh"   // the mesh listener (listen:), TCP
	Admin  = "admin"  // the admin API (admin:), TCP
	Health = "health" // the health listener (health:), TCP
	DNS    = "dns"    // the DNS server (dns.listen:), a UDP and a TCP socket
)

// The environment variables of the protocol.
const (
	EnvFDs    = "LISTEN_FDS"
	EnvNames  = "LISTEN_FDNAMES"
	EnvPID    = "LISTEN_PID"
	EnvParent = "MISAKI_LISTEN_PARENT"
)

// firstFD is SD_LISTEN_FDS_START: the first handed-over descriptor.
const firstFD = 3

// File is one socket to hand over, under its name.
type File struct {
	Name string
	File *os.File
}

// Hand returns the environment and the files (for exec.Cmd's Env and
// ExtraFiles) that hand files over to a child this process starts. environ
// is the child's environment otherwise (os.Environ()); any variables of the
// protocol in it are dropped.
func Hand(environ []string, files []File) (env []string, extra []*os.File) {
	env = slices.DeleteFunc(slices.Clone(environ), isProtocolVar)
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = f.Name
		extra = append(extra, f.File)
	}
	env = append(env,
		EnvFDs+"="+strconv.Itoa(len(files)),
		EnvNames+"="+strings.Join(names, ":"),
		EnvParent+"="+strconv.Itoa(os.Getpid()))
	return env, extra
}

func isProtocolVar(kv string) bool {
	k, _, _ := strings.Cut(kv, "=")
	switch k {
	case EnvFDs, EnvNames, EnvPID, EnvParent:
		return true
	}
	return false
}

// Set is the sockets a process was handed, by name. Take them with
// Listener, PacketConn or Files; Close closes the rest. A nil *Set has no
// sockets. Its methods are safe for concurrent use.
type Set struct {
	mu    sync.Mutex // guards files
	files []File     // not taken yet
}

// NewSet is a Set of files, for a process that has them by other means
// than its environment (tests).
func NewSet(files ...File) *Set { return &Set{files: slices.Clone(files)} }

// FromEnv takes the sockets this process was handed, and unsets the
// variables. It returns nil, and no error, when there are none, or when
// they were meant for another process (LISTEN_PID or MISAKI_LISTEN_PARENT
// names another).
func FromEnv() (*Set, error) {
	fds, names, err := parse(os.Getenv, os.Getpid(), os.Getppid())
	for _, k := range []string{EnvFDs, EnvNames, EnvPID, EnvParent} {
		os.Unsetenv(k)
	}
	if err != nil || fds == 0 {
		return nil, err
	}
	s := &Set{}
	for i := range fds {
		fd := firstFD + i
		syscall.CloseOnExec(fd)
		s.files = append(s.files, File{Name: names[i], File: os.NewFile(uintptr(fd), "listenfd:"+names[i])})
	}
	return s, nil
}

// parse reads the protocol's variables: how many descriptors, and their
// names. Zero descriptors, no error: there are none for this process.
func parse(getenv func(string) string, pid, ppid int) (int, []string, error) {
	v := getenv(EnvFDs)
	if v == "" {
		return 0, nil, nil
	}
	switch p, parent := getenv(EnvPID), getenv(EnvParent); {
	case p != "":
		if p != strconv.Itoa(pid) {
			return 0, nil, nil
		}
	case parent != "":
		if parent != strconv.Itoa(ppid) {
			return 0, nil, nil
		}
	default:
		return 0, nil, nil // meant for whoever set them, not known to be us
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, nil, fmt.Errorf("listenfd: %s=%q: want a count of descriptors", EnvFDs, v)
	}
	names := make([]string, n)
	if nv := getenv(EnvNames); nv != "" {
		got := strings.Split(nv, ":")
		if len(got) != n {
			return 0, nil, fmt.Errorf("listenfd: %s names %d sockets, %s=%d", EnvNames, len(got), EnvFDs, n)
		}
		copy(names, got)
	} else {
		for i := range names {
			names[i] = "unknown" // systemd's name when there is none
		}
	}
	return n, names, nil
}

// Names lists the sockets not taken yet.
func (s *Set) Names() []string {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.namesLocked()
}

// namesLocked lists the sockets not taken yet; the caller holds mu.
func (s *Set) namesLocked() []string {
	var names []string
	for _, f := range s.files {
		names = append(names, f.Name)
	}
	return names
}

// Files takes every socket named name, whatever its type.
func (s *Set) Files(name string) []*os.File {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*os.File
	s.files = slices.DeleteFunc(s.files, func(f File) bool {
		if f.Name == name {
			out = append(out, f.File)
			return true
		}
		return false
	})
	return out
}

// Listener takes the stream socket named name. It returns nil, and no
// error, when there is none.
func (s *Set) Listener(name string) (net.Listener, error) {
	f, err := s.take(name, syscall.SOCK_STREAM)
	if f == nil || err != nil {
		return nil, err
	}
	defer f.Close() // FileListener made its own descriptor
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("listenfd: socket %q: %w", name, err)
	}
	return ln, nil
}

// PacketConn takes the datagram socket named name. It returns nil, and no
// error, when there is none.
func (s *Set) PacketConn(name string) (net.PacketConn, error) {
	f, err := s.take(name, syscall.SOCK_DGRAM)
	if f == nil || err != nil {
		return nil, err
	}
	defer f.Close()
	pc, err := net.FilePacketConn(f)
	if err != nil {
		return nil, fmt.Errorf("listenfd: socket %q: %w", name, err)
	}
	return pc, nil
}

// take removes and returns the first socket named name of type typ.
func (s *Set) take(name string, typ int) (*os.File, error) {
	if s == nil {
		return nil, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, f := range s.files {
		if f.Name != name {
			continue
		}
		t, err := sockType(f.File)
		if err != nil {
			return nil, fmt.Errorf("listenfd: socket %q: %w", name, err)
		}
		if t == typ {
			s.files = slices.Delete(s.files, i, i+1)
			return f.File, nil
		}
	}
	return nil, nil
}

// sockType reads SO_TYPE, without putting the descriptor in blocking
// mode as File.Fd would.
func sockType(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var t int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		t, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TYPE)
	}); err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, fmt.Errorf("not a socket: %w", serr)
	}
	return t, nil
}

// Close closes the sockets not taken and returns their names.
func (s *Set) Close() []string {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	names := s.namesLocked()
	for _, f := range s.files {
		f.File.Close()
	}
	s.files = nil
	return names
}
