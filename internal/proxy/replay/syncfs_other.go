//go:build !linux

package replay

import "os"

// syncfs falls back to fsyncing the directory where syncfs(2) is missing;
// the result files themselves are then only as durable as the OS makes them.
func syncfs(d *os.File) error { return d.Sync() }
