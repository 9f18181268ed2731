package durable

import (
	"fmt"
	"os"
	"path/filepath"
)

// WriteNew writes data to path, which must not exist yet. The bytes go to
// a temporary file in the same directory, which is synced and then
// hard-linked to path: a crash leaves either no file or the whole file,
// and an existing file is never replaced, even by a second process racing
// this one (link fails with fs.ErrExist where rename would overwrite). The
// directory is synced after. The hub's trust roots, signing keys and fleet
// CA are written this way.
func WriteNew(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after the link, this drops the temporary name only
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Link(tmp, path); err != nil {
		return err
	}
	if err := os.Remove(tmp); err != nil {
		return err
	}
	return SyncDir(dir)
}

// SyncDir fsyncs a directory, making the files created or removed in it
// so far durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
