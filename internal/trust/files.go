package trust

import (
	"errors"
	"fmt"
	"github.com/misaki-io/misaki/internal/durable"
	"os"
	"path/filepath"
)

// moveFile renames src to dst and syncs both directories, so the move
// survives a crash.
func moveFile(src, dst string) error {
	if _, err := os.Lstat(dst); err == nil {
		return fmt.Errorf("move %s: %s exists", src, dst)
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.Rename(src, dst); err != nil {
		return err
	}
	if err := durable.SyncDir(filepath.Dir(dst)); err != nil {
		return err
	}
	return durable.SyncDir(filepath.Dir(src))
}
