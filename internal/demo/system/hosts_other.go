//go:build !linux

package system

import (
	"errors"
	"syscall"
)

var errNoHosts = errors.New("a private /etc/hosts needs Linux mount namespaces")

func hostsSysProcAttr() (*syscall.SysProcAttr, error) { return nil, errNoHosts }

// ExecWithHosts is Linux only; see hosts_linux.go.
func ExecWithHosts(string, string, []string) error { return errNoHosts }

func mountNamespace() (string, error) { return "", errNoHosts }
