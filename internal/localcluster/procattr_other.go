//go:build !linux

package localcluster

import (
	"os/exec"
	"syscall"

	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// procAttr is nil: only Linux ties a child's life to its parent's.
func procAttr() *syscall.SysProcAttr { return nil }

// guard is nil: see procAttr.
func guard(*envtest.Environment) *exec.Cmd { return nil }
